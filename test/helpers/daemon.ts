/**
 * Running `credvault daemon` (the built binary) for a test, and talking HTTP to it over its unix
 * socket or loopback TCP.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import type { WrappedDataKey } from '../../src/crypto/envelope.js';
import { Secret } from '../../src/crypto/secret.js';
import { adAccountConnections, oauthTokensVault } from '../../src/db/schema/index.js';
import * as appStore from '../../src/db/store/apps.js';
import type { NewConnectionRow } from '../../src/db/store/connections.js';
import * as dataKeys from '../../src/db/store/data-keys.js';
import type { NewGrantRow } from '../../src/db/store/tokens.js';
import type { PlatformId } from '../../src/providers/catalog.js';
import { type AuditEntry, recordAudit } from '../../src/services/audit.js';
import { openContext } from '../../src/services/context.js';
import { expiryColumns, grantSlot, refreshTokenExpiry, tokenSha256 } from '../../src/services/grants.js';
import { type Double, MICROSOFT_ADS_SCOPE, startMicrosoftDouble } from '../doubles/index.js';
import { addAppFor, adoptGrant } from './flows.js';
import type { TestVault } from './vault.js';
import { createVault } from './vault.js';
import { until } from './wait.js';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json<T = unknown>(): T;
}

export interface RunningDaemon {
  child: ChildProcess;
  /** `unix:/path` or `host:port`. */
  listen: string;
  logs(): string;
  get(path: string, options?: { token?: string; headers?: Record<string, string> }): Promise<HttpAnswer>;
  /** Any method; `body` is sent as JSON (a string is sent as it is). */
  request(
    method: string,
    path: string,
    options?: { token?: string; headers?: Record<string, string>; body?: unknown },
  ): Promise<HttpAnswer>;
  /** Sends a signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
  exited: Promise<number>;
}

export async function startDaemon(
  vault: TestVault,
  options: { args?: string[]; env?: Record<string, string>; tcpPort?: number; name?: string } = {},
): Promise<RunningDaemon> {
  const listen = options.tcpPort
    ? `127.0.0.1:${options.tcpPort}`
    : `unix:${join(vault.root, `${options.name ?? 'daemon'}.sock`)}`;
  const child = vault.spawn(['daemon', '--listen', listen, ...(options.args ?? [])], {
    env: { CREDVAULT_LOCK_TIMEOUT: '60', ...options.env },
  });
  child.stdin!.end();
  let logs = '';
  child.stdout!.on('data', (d: Buffer) => {
    logs += d.toString('utf8');
  });
  child.stderr!.on('data', (d: Buffer) => {
    logs += d.toString('utf8');
  });
  const exited = new Promise<number>((resolve) =>
    child.on('close', (code, signal) => resolve(code ?? (signal === 'SIGKILL' ? 137 : 1))),
  );
  const send = (
    method: string,
    path: string,
    opts: { token?: string; headers?: Record<string, string>; body?: unknown } = {},
  ) =>
    new Promise<HttpAnswer>((resolve, reject) => {
      const payload =
        opts.body === undefined
          ? null
          : typeof opts.body === 'string'
            ? opts.body
            : JSON.stringify(opts.body);
      const target = listen.startsWith('unix:')
        ? { socketPath: listen.slice(5) }
        : { host: '127.0.0.1', port: Number(listen.split(':')[1]) };
      const req = request(
        {
          ...target,
          method,
          path,
          headers: {
            host: 'localhost',
            ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
            ...(payload !== null
              ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }
              : {}),
            ...opts.headers,
          },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            body += chunk;
          });
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body,
              json: <T>() => JSON.parse(body) as T,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(payload ?? undefined);
    });
  const get = (path: string, opts: { token?: string; headers?: Record<string, string> } = {}) =>
    send('GET', path, opts);
  const ended: { code: number | null } = { code: null };
  void exited.then((code) => {
    ended.code = code;
  });
  const ready = await until(
    async () => ended.code !== null || (await get('/healthz').catch(() => null))?.status === 200,
    { intervalMs: 100 },
  );
  if (ended.code !== null)
    throw new Error(`the daemon exited with ${ended.code} before it was ready:\n${logs}`);
  if (!ready) throw new Error(`the daemon did not become ready:\n${logs}`);
  return {
    child,
    listen,
    logs: () => logs,
    get,
    request: send,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * Many connections at once, each on its own grant issued by the double, with access tokens expiring
 * soon: as 1-hour tokens issued an hour before they expire (the sweep refreshes a token past half its
 * life). Rows as `connections add` stores them (its data key made and wrapped, its tokens sealed and
 * its connection made by credvault's own code, with their audit records), written in a few statements
 * rather than a grant's seven each: on the embedded database in this process, a thousand grants
 * stored one by one cost several CPU-seconds.
 */
export async function seedConnections(
  vault: TestVault,
  double: Double<unknown, unknown>,
  appLabel: string,
  clientId: string,
  scope: string,
  count: number,
  expiresInSeconds: number,
): Promise<string[]> {
  const issued: string[] = [];
  const config = resolveConfig({}, { ...vault.env } as NodeJS.ProcessEnv);
  const ctx = await openContext(config, { name: 'test-seed' });
  try {
    const [app] = await appStore.findByLabel(ctx.db, appLabel);
    const platform = app!.platform as PlatformId;
    const keyring = await ctx.keyring();
    await keyring.followRotation((await dataKeys.activeVaultKey(ctx.db))?.kekId ?? null);
    const now = new Date();
    const expiresAt = new Date(now.getTime() + expiresInSeconds * 1000);
    const keys: WrappedDataKey[] = [];
    const grants: NewGrantRow[] = [];
    const connections: NewConnectionRow[] = [];
    const audit: AuditEntry[] = [];
    for (let i = 0; i < count; i++) {
      const issuedGrant = double.issueGrant({ clientId, scope } as never);
      issued.push(issuedGrant.accessToken, issuedGrant.refreshToken);
      const grantId = randomUUID();
      const dataKeyId = randomUUID();
      keys.push((await keyring.createDataKey(dataKeyId)).wrapped);
      const refreshToken = new Secret(issuedGrant.refreshToken);
      grants.push({
        id: grantId,
        platform,
        appId: app!.id,
        dataKeyId,
        accessTokenEnc: await keyring.encrypt(
          issuedGrant.accessToken,
          grantSlot(grantId, 'access_token_enc'),
          dataKeyId,
        ),
        refreshTokenEnc: await keyring.encrypt(
          refreshToken,
          grantSlot(grantId, 'refresh_token_enc'),
          dataKeyId,
        ),
        tokenType: 'Bearer',
        scope,
        accessTokenExpiresAt: expiresAt,
        ...expiryColumns(refreshTokenExpiry(platform, { refreshTokenExpiresAt: null }, now, null)),
        lastRefreshedAt: new Date(Math.min(now.getTime(), expiresAt.getTime() - 3600_000)),
        refreshTokenSha256: tokenSha256(refreshToken),
      });
      const connectionId = randomUUID();
      connections.push({
        id: connectionId,
        platform,
        externalAccountId: `seed-${i}`,
        accountName: `Seeded ${i}`,
        name: null,
        connectedBy: ctx.actor.name,
        appId: app!.id,
        tokenId: grantId,
        status: 'active',
        statusMessage: null,
        consecutiveFailures: 0,
        details: { currency: 'USD' },
      });
      audit.push(
        {
          action: 'connection.create',
          targetType: 'connection',
          targetId: connectionId,
          connectionId,
          outcome: 'success',
          detail: { platform, account: `seed-${i}`, app: appLabel, via: 'adopt' },
        },
        {
          action: 'token.store',
          targetType: 'grant',
          targetId: grantId,
          outcome: 'success',
          detail: {
            platform,
            app: appLabel,
            accounts: [`seed-${i}`],
            secrets: ['access_token', 'refresh_token'],
          },
        },
      );
    }
    await ctx.transaction(async (tx) => {
      await dataKeys.insertMany(tx, keys, 'grant');
      // A few hundred rows a statement: far below PostgreSQL's 65,535 parameters.
      for (let i = 0; i < count; i += 250) {
        await tx.insert(oauthTokensVault).values(grants.slice(i, i + 250));
        await tx.insert(adAccountConnections).values(connections.slice(i, i + 250));
      }
      await recordAudit(tx, ctx.actor, audit);
    });
  } finally {
    await ctx.close();
  }
  return issued;
}

/**
 * `credvault daemon --listen HOST:0` (a port the system picks, so no race with other tests for a free
 * one), once it has logged that it listens; the port is the one its run file gives.
 */
export function spawnDaemonOnAnyPort(
  vault: TestVault,
  host: string,
  args: string[] = [],
): Promise<{ child: ChildProcess; port: number; logs(): string }> {
  return spawnListeningDaemon(vault, ['--listen', `${host}:0`, ...args]);
}

/** `credvault daemon ARGS`, once it has logged that it listens; the port is the one its run file gives. */
export async function spawnListeningDaemon(
  vault: TestVault,
  args: string[],
): Promise<{ child: ChildProcess; port: number; logs(): string }> {
  const child = vault.spawn(['daemon', ...args], {
    env: { CREDVAULT_LOCK_TIMEOUT: '60' },
  });
  child.stdin!.end();
  let logs = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      logs += d.toString();
      if (logs.includes('credvault daemon listening')) resolve();
    });
    child.on('close', () => reject(new Error(`the daemon exited: ${logs}`)));
  });
  const run = JSON.parse(readFileSync(join(vault.home, 'run', 'daemon.json'), 'utf8'));
  return { child, port: run.listen.port as number, logs: () => logs };
}

/**
 * Polls /healthz until the daemon says it is shutting down (503), while it runs (WAIT_MS at most); its
 * last answer.
 */
export async function untilDraining(daemon: RunningDaemon): Promise<HttpAnswer> {
  let health = await daemon.get('/healthz');
  let ended = false;
  void daemon.exited.then(() => {
    ended = true;
  });
  await until(async () => {
    if (health.status === 503 || ended) return true;
    // Kept when it fails: the daemon ends and closes its socket after it drained.
    health = await daemon.get('/healthz').catch(() => health);
    return health.status === 503;
  });
  return health;
}

/**
 * The addresses that sockets of this machine listen on at a TCP port, as the kernel lists them
 * (/proc/net/tcp and tcp6): `127.0.0.1`, `::1`, `0.0.0.0`, `::`, or another. What a probe from
 * loopback cannot show: whether the port is open on the other interfaces too.
 */
export function listeningAddresses(port: number): string[] {
  const found: string[] = [];
  for (const [file, v6] of [
    ['/proc/net/tcp', false],
    ['/proc/net/tcp6', true],
  ] as const) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // no IPv6 on this machine
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      const [hex, portHex] = local!.split(':');
      // 0A: LISTEN. Addresses are written as 32-bit words in the machine's (little-endian) order.
      if (state !== '0A' || Number.parseInt(portHex!, 16) !== port) continue;
      const bytes = (hex!.match(/.{8}/g) ?? []).flatMap((word) => word.match(/../g)!.reverse());
      found.push(
        v6
          ? new URL(`http://[${(bytes.join('').match(/.{4}/g) ?? []).join(':')}]`).hostname.slice(1, -1)
          : bytes.map((b) => Number.parseInt(b, 16)).join('.'),
      );
    }
  }
  return found.sort();
}

/**
 * A vault with a Microsoft Ads app on a double of its own, and adopt(account, name): a grant the
 * double issues, adopted by `connections add` for that account. What to close goes on `cleanups`.
 */
export async function microsoftVault(cleanups: Array<() => Promise<unknown>>) {
  const double = await startMicrosoftDouble();
  cleanups.push(() => double.close());
  const v = await createVault();
  cleanups.push(() => v.destroy());
  const app = await addAppFor(v, 'microsoft_ads', double as never);
  const adopt = async (account: string, name: string) => {
    const grant = double.issueGrant({
      clientId: app.clientId,
      scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
    } as never);
    await adoptGrant(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: [account], name });
    return grant;
  };
  return { double, v, app, adopt };
}

/** `credvault clients create ARGS`: the token it shows once. */
export async function client(v: TestVault, args: string[]): Promise<string> {
  const made = await v.json<{ token: string }>(['clients', 'create', ...args]);
  return made.token;
}
