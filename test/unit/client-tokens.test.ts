import { createHash } from 'node:crypto';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { DaemonCache } from '../../src/daemon/cache.js';
import type { Logger } from '../../src/daemon/log.js';
import { createTokenServer } from '../../src/daemon/server.js';
import type { Db } from '../../src/db/client.js';
import type { ClientRow } from '../../src/db/store/clients.js';
import { authenticateClient, hashClientToken, sameHash } from '../../src/services/clients.js';
import type { ServiceContext } from '../../src/services/context.js';

/**
 * security.md, the daemon's endpoint: client tokens are compared in constant time, with
 * `timingSafeEqual` on their SHA-256 hashes.
 *
 * A spy on node:crypto's own `timingSafeEqual`: `vi.spyOn` cannot redefine an export of an ES module
 * namespace (a built-in's included), so the module is mocked with its real self, `timingSafeEqual`
 * wrapped in a `vi.fn` that calls the real one. Every module of src/ this file loads imports that
 * mock: the comparisons below are the real ones, and the spy sees each.
 */
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return { ...actual, default: actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

const { timingSafeEqual } = await import('node:crypto');
const spy = vi.mocked(timingSafeEqual);

const digest = (text: string) => createHash('sha256').update(text).digest('hex');

beforeEach(() => {
  spy.mockClear();
});

describe('sameHash', () => {
  it('is true for equal digests, false for different ones, ones of another length and ones not of 32 bytes', () => {
    const a = digest('a');
    expect(sameHash(a, a)).toBe(true);
    // The same digest in upper case is the same bytes.
    expect(sameHash(a, a.toUpperCase())).toBe(true);
    expect(sameHash(a, digest('b'))).toBe(false);
    // Differs in the last byte only.
    expect(sameHash(a, `${a.slice(0, 62)}${a.endsWith('00') ? '01' : '00'}`)).toBe(false);
    // A prefix of the digest (another length) is not the digest.
    expect(sameHash(a, a.slice(0, 32))).toBe(false);
    expect(sameHash(a.slice(0, 32), a)).toBe(false);
    // Equal, but not 32 bytes: not SHA-256 digests, so not a match.
    expect(sameHash('abcd', 'abcd')).toBe(false);
    expect(sameHash('', '')).toBe(false);
    const sha512 = createHash('sha512').update('a').digest('hex');
    expect(sameHash(sha512, sha512)).toBe(false);
    // Not hex at all: Buffer.from stops at the first non-hex character (nothing here).
    expect(sameHash('zz'.repeat(32), 'zz'.repeat(32))).toBe(false);
  });

  it('compares with timingSafeEqual, on the 32 bytes of each digest', () => {
    const a = digest('a');
    const b = digest('b');
    expect(sameHash(a, b)).toBe(false);
    expect(sameHash(a, a)).toBe(true);
    expect(spy).toHaveBeenCalledTimes(2);
    for (const [left, right] of spy.mock.calls) {
      expect((left as Buffer).length).toBe(32);
      expect((right as Buffer).length).toBe(32);
    }
    expect(Buffer.from(spy.mock.calls[0]![0] as Buffer).toString('hex')).toBe(a);
    expect(Buffer.from(spy.mock.calls[0]![1] as Buffer).toString('hex')).toBe(b);
  });
});

const TOKEN = `cvc_${'A'.repeat(43)}`;

function clientRow(tokenHash: string): ClientRow {
  return {
    id: '11111111-1111-4111-8111-111111111111',
    name: 'reporting',
    tokenHash,
    role: 'reader',
    scope: { all: true },
    createdBy: 'test',
    createdAt: new Date(),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
  } as ClientRow;
}

/** A database handle that answers every select with `rows` (the store's one query, by token hash). */
function dbAnswering(rows: ClientRow[]): Db {
  return { select: () => ({ from: () => ({ where: async () => rows }) }) } as unknown as Db;
}

describe('authenticateClient', () => {
  it('compares the stored hash with the token’s through timingSafeEqual, and refuses a row whose hash is not the token’s', async () => {
    const hash = hashClientToken(TOKEN);
    const found = await authenticateClient(dbAnswering([clientRow(hash)]), TOKEN);
    expect(found?.name).toBe('reporting');
    expect(spy).toHaveBeenCalledTimes(1);
    expect(Buffer.from(spy.mock.calls[0]![0] as Buffer).toString('hex')).toBe(hash);
    expect(Buffer.from(spy.mock.calls[0]![1] as Buffer).toString('hex')).toBe(hash);
    // A row the lookup returned whose hash is another token's is not this token's client.
    spy.mockClear();
    const other = await authenticateClient(
      dbAnswering([clientRow(hashClientToken(`cvc_${'B'.repeat(43)}`))]),
      TOKEN,
    );
    expect(other).toBeNull();
    expect(spy).toHaveBeenCalledTimes(1);
  });
});

describe("the daemon's local client", () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  /**
   * The daemon's HTTP endpoint, built by createTokenServer as the daemon builds it, with `localToken`
   * (the local CLI's credential), and nothing behind it: /metrics for the local client reads neither
   * the database nor the cache, so any other path an answer took would fail.
   */
  async function server(localToken: string) {
    const unexpected = (what: string) => () => {
      throw new Error(`unexpected call: ${what}`);
    };
    const cache = {
      client: () => null,
      forgetClient: () => {},
      mark: () => 0,
      verifiedClient: () => null,
      rememberClient: unexpected('cache.rememberClient'),
    } as unknown as DaemonCache;
    const log: Logger = { info() {}, warn() {}, error() {}, debug() {}, flush() {} };
    const srv = createTokenServer({
      ctx: { db: new Proxy({}, { get: unexpected('the database') }) } as unknown as ServiceContext,
      cache,
      audit: { used: unexpected('audit.used'), write: unexpected('audit.write') } as never,
      metrics: {
        requests: { startTimer: () => () => {} },
        registry: { metrics: async () => 'metrics 1\n', contentType: 'text/plain' },
      } as never,
      log,
      options: {
        listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
        refreshWindowMs: 0,
        intervalMs: 0,
        concurrency: 1,
        allowedHosts: [],
        allowRemote: false,
        publicCallbackUrl: null,
      },
      health: async () => ({
        ok: true,
        reasons: [],
        lastSweepAt: null,
        shuttingDown: false,
        listening: true,
      }),
      shuttingDown: () => false,
      localToken,
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => srv.close(() => resolve())));
    const port = (srv.address() as AddressInfo).port;
    return (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            path: '/metrics',
            headers: { host: 'localhost', authorization: `Bearer ${token}` },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
  }

  it('is recognised by comparing the hashes with timingSafeEqual, and another token is not', async () => {
    const get = await server(TOKEN);
    expect(await get(TOKEN)).toBe(200);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(Buffer.from(spy.mock.calls[0]![0] as Buffer).toString('hex')).toBe(hashClientToken(TOKEN));
    // Not a client token's shape: after the local check (compared too), nothing is looked up.
    spy.mockClear();
    expect(await get('cvc_short')).toBe(401);
    expect(spy).toHaveBeenCalledTimes(1);
    expect(Buffer.from(spy.mock.calls[0]![0] as Buffer).toString('hex')).toBe(hashClientToken('cvc_short'));
  });
});
