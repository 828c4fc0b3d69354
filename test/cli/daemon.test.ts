import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateMasterKey } from '../../src/crypto/local-key.js';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../doubles/index.js';
import {
  client,
  type HttpAnswer,
  listeningAddresses,
  microsoftVault,
  spawnDaemonOnAnyPort,
  spawnListeningDaemon,
  startDaemon,
  untilDraining,
} from '../helpers/daemon.js';
import { startDbProxy } from '../helpers/db-proxy.js';
import { addAppFor, adoptGrant, freePort } from '../helpers/flows.js';
import { BIN, ROOT } from '../helpers/paths.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

const setup = () => microsoftVault(cleanups);

/** Makes every grant due for the sweep: refreshed 59 minutes ago, expiring in one. */
const MAKE_DUE =
  "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'";

/**
 * Waits until the daemon has finished starting (its sweep started): /healthz answers 200 from when it
 * listens, before its start-up maintenance.
 */
/**
 * Starts a daemon (with `args`) until its first sweep has sent a refresh, waits `settleMs` more for
 * any other it would send with it, and stops it (exit 0). Resolves the platform's count before.
 */
async function firstSweep(
  v: TestVault,
  double: { refreshAttempts: number },
  args: string[],
  settleMs: number,
): Promise<number> {
  const attempts = double.refreshAttempts;
  const daemon = await startDaemon(v, { args });
  await until(() => double.refreshAttempts !== attempts, { intervalMs: 50 });
  await sleep(settleMs);
  expect(await daemon.stop('SIGTERM')).toBe(0);
  return attempts;
}

async function untilStarted(daemon: { logs(): string }): Promise<void> {
  await until(() => daemon.logs().includes('credvault daemon listening'), { intervalMs: 50 });
  expect(daemon.logs()).toContain('credvault daemon listening');
}

/** Polls /healthz (every 100 ms, up to `ms`: WAIT_MS unless given) until `holds`; its last answer. */
async function healthUntil(
  daemon: { get(path: string): Promise<HttpAnswer> },
  holds: (answer: HttpAnswer) => boolean,
  ms?: number,
): Promise<HttpAnswer> {
  let answer = await daemon.get('/healthz');
  await until(
    async () => {
      if (holds(answer)) return true;
      answer = await daemon.get('/healthz');
      return holds(answer);
    },
    { timeoutMs: ms, intervalMs: 100 },
  );
  return answer;
}

/**
 * `begin; lock table oauth_tokens_vault in access exclusive mode;` from another session (as from
 * psql), whose transaction also makes every grant due (seen once it commits); or another table. Resolves once the lock is
 * held, to the function that commits it.
 */
async function lockTokensTable(v: TestVault, table = 'oauth_tokens_vault'): Promise<() => Promise<void>> {
  const locker = postgres(v.databaseUrl!, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const held = locker.begin(async (tx) => {
    await tx.unsafe(`lock table ${table} in access exclusive mode`);
    if (table === 'oauth_tokens_vault') await tx.unsafe(MAKE_DUE);
    locked();
    await released;
  });
  const commit = async () => {
    release();
    await held.catch(() => {});
    await locker.end();
  };
  cleanups.push(commit);
  await isLocked;
  return commit;
}

/**
 * A daemon on PostgreSQL behind a proxy (startDbProxy), two connections (acct-a, acct-b) and two
 * clients (reader, other), every client, connection and token held in its memory already.
 */
async function daemonBehindProxy() {
  const { v, adopt } = await setup();
  await adopt('987', 'acct-a');
  await adopt('988', 'acct-b');
  const reader = await client(v, ['reader', '--all']);
  const other = await client(v, ['other', '--all']);
  const proxy = await startDbProxy(v.databaseUrl!);
  cleanups.push(() => proxy.close());
  const daemon = await startDaemon(v, { env: { DATABASE_URL: proxy.url } });
  cleanups.push(() => daemon.stop());
  const token = (ref: string, as: string) => daemon.get(`/v1/connections/${ref}/token`, { token: as });
  for (const as of [reader, other])
    for (const ref of ['acct-a', 'acct-b']) expect((await token(ref, as)).status).toBe(200);
  return { v, reader, other, proxy, daemon, token };
}

/** A 503 to retry (the database refused the audit row), carrying no token of any kind. */
function expectRefusedUnaudited(answer: HttpAnswer, double: { accessTokens: Map<string, unknown> }) {
  expect(answer.status).toBe(503);
  expect(answer.headers['retry-after']).toBe('5');
  expect(answer.json()).toEqual({
    error: { code: 'unavailable', message: 'the database cannot be used now' },
  });
  for (const token of double.accessTokens.keys()) expect(answer.body).not.toContain(token);
}

describe('the token endpoint', () => {
  it.runIf(ONCE)('answers the whole matrix of refusals and serves only what a client may read', async () => {
    const { double, v, adopt } = await setup();
    const a = await adopt('987', 'acct-a');
    const bGrant = await adopt('988', 'acct-b');
    // Made first, so that its second has mostly passed by the time the daemon answers.
    const brief = ['clients', 'create', 'brief', '--all', '--expires-in', '1s'];
    const expiring = await v.json<{ token: string; expires_at: string }>(brief);
    const reader = await client(v, ['reader-a', '--connection', 'acct-a']);
    const all = await client(v, ['everything', '--all', '--role', 'operator']);
    const revoked = await client(v, ['gone', '--all']);
    expect((await v.cli(['clients', 'revoke', 'gone'])).code).toBe(0);
    // The name of a revoked client is given again (how a CI job's token is replaced); the old token
    // stays refused and the revoked row stays listed, renamed gone.revoked-<id>: a credvault from
    // before names could be reused finds a client by its name alone (migration 0012).
    const successor = await client(v, ['gone', '--all']);
    const again = await v.cli(['clients', 'create', 'gone', '--all']);
    expect(again.code).toBe(7);
    expect(again.stderr).toContain('credvault clients revoke gone');
    for (const bad of ['0s', '99999999999d']) {
      const refused = await v.cli(['clients', 'create', `bad-${bad}`, '--all', '--expires-in', bad]);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toMatch(/--expires-in (must be longer than zero|is too long)/);
    }
    // One listing for all of it: the refused creates (the name taken, the bad durations) made nothing.
    const clients = await v.json<Array<{ name: string; revoked_at: string | null }>>(['clients', 'list']);
    expect(clients.filter((c) => c.name === 'gone').map((c) => c.revoked_at === null)).toEqual([true]);
    const renamed = clients.find((c) => /^gone\.revoked-[0-9a-f]{8}$/.test(c.name));
    expect(renamed?.revoked_at).not.toBeNull();
    expect(clients.map((c) => c.name).sort()).toEqual([
      'brief',
      'everything',
      'gone',
      renamed!.name,
      'reader-a',
    ]);
    // The migration renames what an earlier version left (a revoked and a live client of one name).
    await v.sql(
      "insert into api_clients (id, name, token_hash, role, scope, created_by, revoked_at) select gen_random_uuid(), 'reused', md5(random()::text), 'reader', '{\"all\":true}', 'test', now()",
    );
    await v.sql(
      "insert into api_clients (id, name, token_hash, role, scope, created_by) select gen_random_uuid(), 'reused', md5(random()::text), 'reader', '{\"all\":true}', 'test'",
    );
    await v.sql(readFileSync(join(ROOT, 'drizzle', '0012_revoked_client_names.sql'), 'utf8'));
    const reused = await v.sql<{ name: string; revoked: boolean }>(
      "select name, revoked_at is not null as revoked from api_clients where name like 'reused%' order by revoked",
    );
    expect(reused.map((r) => [r.name.replace(/[0-9a-f]{8}$/, 'ID'), r.revoked])).toEqual([
      ['reused', false],
      ['reused.revoked-ID', true],
    ]);
    await v.sql("delete from api_clients where name like 'reused%'");
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    // Until its expiry has passed (usually while the daemon started).
    const expiresAt = Date.parse(expiring.expires_at);
    while (Date.now() <= expiresAt) await new Promise((r) => setTimeout(r, expiresAt - Date.now() + 1));

    const token = (path: string, t?: string, headers?: Record<string, string>) =>
      daemon.get(path, { token: t, headers });
    const ok = await token('/v1/connections/acct-a/token?min_ttl=60', reader, {
      'user-agent': 'deploy-job/1.0 (ci)',
    });
    expect(ok.status, ok.body).toBe(200);
    expect(ok.headers['cache-control']).toBe('no-store');
    expect(ok.headers['access-control-allow-origin']).toBeUndefined();
    const doc = ok.json<{ access_token: string; external_account_id: string }>();
    // The contract's document, the one `token get --format json` prints: nothing more (no refresh token).
    expect(Object.keys(doc).sort()).toEqual([
      'access_token',
      'connection_id',
      'expires_at',
      'external_account_id',
      'platform',
      'token_type',
    ]);
    expect(doc.external_account_id).toBe('987');
    expect(double.accessTokens.has(doc.access_token)).toBe(true);
    // Each connection gets its own grant's token, served again from memory: never another's.
    const grantOf = async (name: string) => {
      const served = (await token(`/v1/connections/${name}/token`, all)).json<{ access_token: string }>();
      return double.findGrant(served.access_token)?.id;
    };
    expect(double.findGrant(doc.access_token)?.id).toBe(a.grantId);
    expect(await grantOf('acct-b')).toBe(bGrant.grantId);
    expect(await grantOf('acct-a')).toBe(a.grantId);
    expect(await grantOf('acct-b')).toBe(bGrant.grantId);

    const expectError = async (
      answer: Promise<{ status: number; body: string; headers: Record<string, unknown> }>,
      status: number,
      code: string,
    ) => {
      const got = await answer;
      expect(got.status, got.body).toBe(status);
      expect(JSON.parse(got.body)).toMatchObject({ error: { code } });
      expect(got.headers['cache-control']).toBe('no-store');
      return got;
    };
    await expectError(token('/v1/connections/acct-a/token'), 401, 'unauthorized');
    await expectError(
      token('/v1/connections/acct-a/token', 'cvc_notarealtokenatallnotarealtokenatallnotareal'),
      401,
      'unauthorized',
    );
    await expectError(token('/v1/connections/acct-a/token', revoked), 401, 'unauthorized');
    expect((await token('/v1/connections/acct-a/token', successor)).status).toBe(200);
    await expectError(token('/v1/connections/acct-a/token', expiring.token), 401, 'unauthorized');
    await expectError(token('/v1/connections/acct-b/token', reader), 403, 'forbidden');
    await expectError(
      token('/v1/connections/acct-a/token', reader, { host: 'evil.example' }),
      403,
      'forbidden',
    );
    // An IPv6 literal with a name after it is not that loopback address.
    await expectError(
      token('/v1/connections/acct-a/token', reader, { host: '[::1]evil.example' }),
      403,
      'forbidden',
    );
    await expectError(
      token('/v1/connections/acct-a/token', reader, { origin: 'http://localhost' }),
      403,
      'forbidden',
    );
    await expectError(token('/v1/connections/nope/token', all), 404, 'not_found');
    // A client scoped to acct-a cannot tell a connection that does not exist from one it may not read.
    await expectError(token('/v1/connections/nope/token', reader), 403, 'forbidden');
    await expectError(token('/nowhere', all), 404, 'not_found');
    await expectError(token('/v1/connections/acct-a/token?min_ttl=forever', all), 400, 'invalid_input');
    await expectError(token('/v1/connections/acct-a/token?min_ttl=31536001', all), 400, 'invalid_input');
    await expectError(token('/v1/connections/acct-a/token?min_ttl=1&min_ttl=600', all), 400, 'invalid_input');

    // Listing shows only what the client may read.
    const listed = await token('/v1/connections', reader);
    expect(listed.json<Array<{ name: string }>>().map((c) => c.name)).toEqual(['acct-a']);

    // A min_ttl beyond the time a token has left forces a refresh, once the token is over a minute
    // old: one within a minute of its whole life asks for the newest token, which a token refreshed
    // within the last minute is. So the grant is made two minutes older (it lives as long).
    const beyondLeft = async (name: string) => {
      await v.sql(
        `update oauth_tokens_vault set last_refreshed_at = last_refreshed_at - interval '2 minutes'
         where id = (select token_id from ad_account_connections where name = $1)`,
        [name],
      );
      const served = await token(`/v1/connections/${name}/token`, all);
      const { expires_at } = served.json<{ expires_at: string }>();
      return Math.ceil((Date.parse(expires_at) - Date.now()) / 1000) + 1;
    };
    // needs_reauth: the platform refuses the refresh token.
    const pastA = await beyondLeft('acct-a');
    double.revokeGrant(a.refreshToken);
    await expectError(token(`/v1/connections/acct-a/token?min_ttl=${pastA}`, all), 409, 'reauth_required');
    // Platform down: 503 with Retry-After.
    const pastB = await beyondLeft('acct-b');
    double.faults.failNext(10, { status: 503, body: 'down' });
    const down = await expectError(
      token(`/v1/connections/acct-b/token?min_ttl=${pastB}`, all),
      503,
      'unavailable',
    );
    expect(Number(down.headers['retry-after'])).toBeGreaterThan(0);

    const health = await daemon.get('/healthz');
    expect(health.json()).toMatchObject({ status: 'ok' });
    const metrics = await token('/metrics', all);
    expect(metrics.body).toContain('credvault_refreshes_total');
    expect(metrics.body).toContain('credvault_http_request_duration_seconds');
    expect(metrics.body).toMatch(/credvault_connections\{platform="microsoft_ads",status="active"\}/);
    await expectError(token('/metrics'), 401, 'unauthorized');

    // The unix socket is 0600; no log line or answer carries another connection's token.
    const socket = daemon.listen.slice(5);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(join(v.home, 'run', 'daemon.json')).mode & 0o777).toBe(0o600);
    expect(await daemon.stop()).toBe(0);
    for (const t of [doc.access_token, ...double.refreshTokens.keys()])
      expect(daemon.logs()).not.toContain(t);
    const audit = await v.json<
      Array<{
        action: string;
        actor: string;
        client_address: string | null;
        user_agent: string | null;
        outcome: string;
        detail: { error?: string };
      }>
    >(['audit', 'list', '--limit', '200']);
    const served = audit.filter((r) => r.action === 'token.serve');
    expect(served.map((r) => r.actor)).toContain('reader-a');
    expect(served.every((r) => r.client_address !== null)).toBe(true);
    // Who asked, as the client said it: the first token served carried a User-Agent.
    expect(served.filter((r) => r.outcome === 'success').at(-1)).toMatchObject({
      actor: 'reader-a',
      user_agent: 'deploy-job/1.0 (ci)',
    });
    // Refusals to a known client are recorded too (newest first), of a connection that does not
    // exist included (a scoped client's as one outside its scope); an unknown client's are not.
    expect(
      served.filter((r) => r.outcome !== 'success').map((r) => [r.actor, r.outcome, r.detail.error]),
    ).toEqual([
      ['everything', 'failure', 'unavailable'],
      ['everything', 'failure', 'reauth_required'],
      ['reader-a', 'denied', 'forbidden'],
      ['everything', 'failure', 'not_found'],
      ['reader-a', 'denied', 'forbidden'],
    ]);
  });

  it.runIf(ONCE)(
    'twenty callers asking at once for a fresher token than it holds share one refresh',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'acct-a');
      // Two minutes left: outside the sweep's window, inside what the callers ask for.
      await v.sql(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '2 minutes', last_refreshed_at = now() - interval '58 minutes'",
      );
      const reader = await client(v, ['reader', '--all']);
      const daemon = await startDaemon(v, { args: ['--refresh-window', '1m'] });
      cleanups.push(() => daemon.stop());
      double.faults.latencyMs = 300;
      const before = double.refreshAttempts;
      const answers = await Promise.all(
        Array.from({ length: 20 }, () =>
          daemon.get('/v1/connections/acct-a/token?min_ttl=600', { token: reader }),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
      expect(double.refreshAttempts - before).toBe(1);
      const tokens = new Set(answers.map((a) => a.json<{ access_token: string }>().access_token));
      expect(tokens.size).toBe(1);
      expect(double.accessTokens.has([...tokens][0]!)).toBe(true);
    },
  );

  it.runIf(ONCE)(
    'answers a connection by any ref that names it (padded with whitespace, an id in capitals, platform-account), and refuses one out of scope however it is written',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      await adopt('988', 'acct-b');
      const [a] = await v.sql<{ id: string }>("select id from ad_account_connections where name = 'acct-a'");
      const reader = await client(v, ['reader-a', '--connection', 'acct-a']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      const token = (ref: string) => daemon.get(`/v1/connections/${ref}/token`, { token: reader });
      const served = (await token('acct-a')).json<{ access_token: string }>().access_token;
      for (const ref of [
        '%20acct-a',
        'acct-a%09',
        '%0Bacct-a%20%20',
        'microsoft_ads:987',
        'microsoft-ads:987',
        a!.id.toUpperCase(),
      ]) {
        const answer = await token(ref);
        expect(answer.status, ref).toBe(200);
        expect(answer.json<{ access_token: string }>().access_token, ref).toBe(served);
      }
      for (const ref of ['%20acct-b', 'microsoft-ads:988']) expect((await token(ref)).status, ref).toBe(403);
      // None of these refs is kept by the daemon (test/unit/daemon-cache.test.ts): its name still is.
      expect((await token('acct-a')).json<{ access_token: string }>().access_token).toBe(served);
    },
  );

  it('keeps a client token only as its SHA-256 hash: shown once, then in no table, database file or output', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const made = await v.json<{ token: string }>(['clients', 'create', 'ci', '--all'], {
      secretOutput: true,
    });
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    expect((await daemon.get('/v1/connections', { token: made.token })).status).toBe(200);
    // The hash of a token that differs in its last character is refused like any unknown one.
    const other = `${made.token.slice(0, -1)}${made.token.endsWith('A') ? 'B' : 'A'}`;
    expect((await daemon.get('/v1/connections', { token: other })).status).toBe(401);
    const listed = await v.cli(['clients', 'list', '--json']);
    expect(listed.code).toBe(0);
    expect(await daemon.stop()).toBe(0);
    const [row] = await v.sql<{ token_hash: string }>("select token_hash from api_clients where name = 'ci'");
    expect(row!.token_hash).toBe(createHash('sha256').update(made.token).digest('hex'));
    await expectNoSecretsLeaked(v, [made.token], [daemon.logs()]);
  });

  // What --listen takes and what the daemon logs: the same whatever database it serves.
  it.runIf(ONCE)(
    'listens beyond loopback only with --allow-remote, and then warns that TLS belongs in front',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const refused = await v.cli(['daemon', '--listen', '0.0.0.0:0']);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('0.0.0.0');
      expect(refused.stderr).toContain('--allow-remote');
      const { child: daemon, port, logs } = await spawnDaemonOnAnyPort(v, '0.0.0.0', ['--allow-remote']);
      cleanups.push(async () => daemon.kill('SIGKILL'));
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      expect(logs()).toContain(`listening on 0.0.0.0:${port} beyond this machine: terminate TLS`);
    },
  );

  // The contract's default address is fixed (8787): one test on it, once.
  it.runIf(ONCE)('listens on 127.0.0.1:8787 by default, and on no other address', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const { child, port, logs } = await spawnListeningDaemon(v, []);
    cleanups.push(async () => {
      child.kill('SIGKILL');
    });
    expect(port).toBe(8787);
    expect(logs()).toContain('listening on 127.0.0.1:8787');
    expect(listeningAddresses(8787)).toEqual(['127.0.0.1']);
    expect((await fetch('http://127.0.0.1:8787/healthz')).status).toBe(200);
  });

  // How --listen treats what is at its address, not the database (which is open by then: a start
  // that fails after opening it ends cleanly on both, as the wrong-key start under systemd below shows).
  it.runIf(ONCE)(
    '--listen never removes what it did not make: a file, or a live socket; a busy port is exit 2',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const { writeFileSync, readFileSync } = await import('node:fs');
      const file = join(v.root, 'precious.txt');
      writeFileSync(file, 'precious');
      const onFile = await v.cli(['daemon', '--listen', `unix:${file}`]);
      expect(onFile.code, onFile.stderr).toBe(2);
      expect(onFile.stderr).toContain('something that is not a socket is there');
      expect(readFileSync(file, 'utf8')).toBe('precious');

      const { createServer } = await import('node:net');
      const other = createServer();
      const socket = join(v.root, 'taken.sock');
      await new Promise<void>((resolve) => other.listen(socket, resolve));
      const port = await freePort();
      const busy = createServer();
      await new Promise<void>((resolve) => busy.listen(port, '127.0.0.1', resolve));
      try {
        const onSocket = await v.cli(['daemon', '--listen', `unix:${socket}`]);
        expect(onSocket.code, onSocket.stderr).toBe(2);
        expect(onSocket.stderr).toContain('another process is listening there');
        expect(existsSync(socket)).toBe(true);
        const onPort = await v.cli(['daemon', '--listen', `127.0.0.1:${port}`]);
        expect(onPort.code, onPort.stderr).toBe(2);
        expect(onPort.stderr).toContain(`cannot listen on 127.0.0.1:${port} (EADDRINUSE)`);
      } finally {
        other.close();
        busy.close();
      }
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'a CREDVAULT_HOME too long for its socket path: the daemon refuses (exit 2) naming the limit and the fix, and leaves no socket',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const { cpSync, readdirSync } = await import('node:fs');
      // $HOME/run/.s.PGSQL.5432 one byte over Linux's 108 (a deep CI workspace reaches it).
      const home = join(v.root, 'h'.repeat(109 - '/run/.s.PGSQL.5432'.length - v.root.length - 1));
      cpSync(v.home, home, { recursive: true });
      const socket = join(home, 'run', '.s.PGSQL.5432');
      expect(Buffer.byteLength(socket)).toBe(109);
      const env = { CREDVAULT_HOME: home };
      const daemon = await v.cli(['daemon', '--listen', '127.0.0.1:0'], { env, timeoutMs: 30_000 });
      expect(daemon.code, daemon.stderr).toBe(2);
      expect(daemon.stderr).toContain(`its socket path ${socket} is 109 bytes long, over the 108`);
      expect(daemon.stderr).toContain('Use a CREDVAULT_HOME of at most 90 bytes');
      expect(existsSync(join(home, 'run')) ? readdirSync(join(home, 'run')) : []).toEqual([]);
      // The commands, which open the files themselves, still work.
      const list = await v.cli(['apps', 'list'], { env });
      expect(list.code, list.stderr).toBe(0);
    },
  );

  it.runIf(ONCE)('--listen unix:PATH longer than a socket path may be: exit 2 naming the limit', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const path = join(v.root, 's'.repeat(120));
    const result = await v.cli(['daemon', '--listen', `unix:${path}`], { timeoutMs: 30_000 });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      `--listen unix:PATH is ${Buffer.byteLength(path)} bytes long, over the 108`,
    );
    expect(existsSync(path.slice(0, 108))).toBe(false);
  });

  it.skipIf(DB_KIND !== 'postgres')(
    'shows a failing claim on /healthz, gives nothing away meanwhile, and sweeps again once it works',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      // The sweep's claim sets a lease; this trigger refuses exactly that (other updates pass).
      const [before] = await v.session(async (query) => {
        await query(`create function refuse_claims() returns trigger language plpgsql as $$
          begin if new.lease_owner is not null then raise exception 'claims refused by the test'; end if;
          return new; end $$`);
        await query(
          'create trigger refuse_claims before update on oauth_tokens_vault for each row execute function refuse_claims()',
        );
        await query(
          "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '1 hour'",
        );
        return query<{ version: number }>('select version from oauth_tokens_vault');
      });
      daemon.child.kill('SIGHUP'); // sweep now
      const healthIs = (status: number) =>
        until(async () => (await daemon.get('/healthz')).status === status, { intervalMs: 100 });
      expect(await healthIs(503), daemon.logs()).toBe(true);
      const health = await daemon.get('/healthz');
      expect(health.body).toContain('last sweep failed: ');
      expect(health.body).toContain('claims refused by the test');
      // The driver's message: never drizzle's, which carries the query and its parameters.
      expect(health.body).not.toContain('Failed query');
      expect(daemon.logs()).not.toContain('Failed query');
      const leased = await v.session(async (query) => {
        const rows = await query('select 1 from oauth_tokens_vault where lease_owner is not null');
        await query('drop trigger refuse_claims on oauth_tokens_vault');
        return rows;
      });
      expect(leased).toEqual([]);
      daemon.child.kill('SIGHUP');
      expect(await healthIs(200), daemon.logs()).toBe(true);
      const [after] = await v.sql<{ version: number; lease_owner: string | null }>(
        'select version, lease_owner from oauth_tokens_vault',
      );
      expect(after).toEqual({ version: before!.version + 1, lease_owner: null });
    },
  );

  it.runIf(ONCE)(
    'SIGHUP with a key that does not open the vault keeps the key in use, and says so',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const reader = await client(v, ['reader', '--all']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
      const keyFile = join(v.home, 'master.key');
      const right = readFileSync(keyFile, 'utf8');
      writeFileSync(keyFile, `${generateMasterKey()}\n`); // what `credvault key generate` prints
      try {
        daemon.child.kill('SIGHUP');
        await until(() => daemon.logs().includes('does not open this vault'), { intervalMs: 100 });
        expect(daemon.logs()).toContain(
          'SIGHUP: the configured key does not open this vault; going on with the key in use',
        );
        // Still serving, from a cache cleared or not: the key in use opens what it must.
        expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
        // No key at all to try is said as such, not as a key that does not open the vault.
        writeFileSync(keyFile, 'not a key\n');
        daemon.child.kill('SIGHUP');
        expect(
          await until(() => daemon.logs().includes('SIGHUP: the configured key could not be read ('), {
            intervalMs: 100,
            timeoutMs: 20_000,
          }),
        ).toBe(true);
        expect(daemon.logs().match(/does not open this vault/g)).toHaveLength(1);
      } finally {
        writeFileSync(keyFile, right);
      }
      // SIGUSR1 opens no debugger (one on 127.0.0.1:9229 would let any local user run code beside the key).
      const inspector = () =>
        new Promise<string>((resolve) => {
          const socket = createConnection(9229, '127.0.0.1');
          socket.on('connect', () => {
            socket.destroy();
            resolve('open');
          });
          socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        });
      const before = await inspector();
      daemon.child.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, 300));
      // (Unless something else on this machine has the inspector's port.)
      if (before === 'ECONNREFUSED') expect(await inspector()).toBe('ECONNREFUSED');
      expect(daemon.logs()).not.toContain('Debugger listening');
      daemon.child.kill('SIGHUP');
      await until(() => daemon.logs().includes('SIGHUP: reloaded the key source'), { intervalMs: 100 });
      expect(daemon.logs()).toContain('SIGHUP: reloaded the key source and cleared caches');
      expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
    },
  );

  it('shows in clients list when each client was last used, not when the daemon wrote it down, and never after its revocation', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const kept = await client(v, ['kept', '--all']);
    const gone = await client(v, ['gone', '--all']);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const before = new Date();
    for (const as of [kept, gone])
      expect((await daemon.get('/v1/connections', { token: as })).status).toBe(200);
    const after = new Date();
    expect((await v.cli(['clients', 'revoke', 'gone'])).code).toBe(0);
    expect((await daemon.get('/v1/connections', { token: gone })).status).toBe(401);
    // The daemon writes what it saw as it stops (and every 30 s while it runs).
    expect(await daemon.stop()).toBe(0);
    const clients = await v.json<
      Array<{ name: string; revoked_at: string | null; last_used_at: string | null }>
    >(['clients', 'list']);
    const used = (name: string) => clients.find((c) => c.name === name)!;
    // Before: both stamped with the time of the write, after the revocation.
    for (const name of ['kept', 'gone']) {
      const at = new Date(used(name).last_used_at ?? 0);
      expect(at >= before && at <= after, `${name}: ${at.toISOString()}`).toBe(true);
    }
    expect(new Date(used('gone').last_used_at!) <= new Date(used('gone').revoked_at!)).toBe(true);
  });

  it('stops serving at once what another process revoked while it was held in memory', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const reader = await client(v, ['reader', '--all']);
    const other = await client(v, ['other', '--all']);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    // Cached now: the client, the connection and its decrypted token.
    expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
    expect((await daemon.get('/v1/connections/acct-a/token', { token: other })).status).toBe(200);
    // On the embedded database the command's notification runs in the daemon's own PGlite, before the
    // command returns: the next request is refused. PostgreSQL delivers it a moment after the commit.
    // (5 s from the command's end, not the shared wait: the daemon's 30-second check would see it too.)
    const soon = async (check: () => Promise<boolean>) => {
      if (DB_KIND === 'pglite') return check();
      const deadline = Date.now() + 5_000;
      while (!(await check())) {
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, 100));
      }
      return true;
    };
    expect((await v.cli(['clients', 'revoke', 'reader'])).code).toBe(0);
    expect(
      await soon(
        async () => (await daemon.get('/v1/connections/acct-a/token', { token: reader })).status === 401,
      ),
    ).toBe(true);
    const revoked = await v.cli(['connections', 'revoke', 'acct-a']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(
      await soon(
        async () => (await daemon.get('/v1/connections/acct-a/token', { token: other })).status === 409,
      ),
    ).toBe(true);
  });

  it('a client revoked while its request waits for a refresh gets no token from it (401), and no serve is audited as a success', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acme-us');
    // Half an hour left: a request for 3590 s of it refreshes.
    await v.sql(
      "update oauth_tokens_vault set access_token_expires_at = now() + interval '30 minutes', last_refreshed_at = now() - interval '30 minutes'",
    );
    const reader = await client(v, ['reader-us', '--connection', 'acme-us']);
    // Outside the sweep's window (30 minutes by default): only the request refreshes.
    const daemon = await startDaemon(v, { args: ['--refresh-window', '1m'] });
    cleanups.push(() => daemon.stop());
    double.faults.latencyMs = 4_000;
    const before = double.refreshAttempts;
    const inFlight = daemon.get('/v1/connections/acme-us/token?min_ttl=3590', { token: reader });
    let answered = false;
    void inFlight.then(() => {
      answered = true;
    });
    await until(() => double.refreshAttempts > before, { intervalMs: 20 });
    expect(double.refreshAttempts).toBe(before + 1);
    const revoked = await v.cli(['clients', 'revoke', 'reader-us']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(answered, 'the request was answered before the revocation returned').toBe(false);
    const answer = await inFlight;
    // Before: 200 with an access token, audited client.revoke → token.refresh → token.serve success.
    expect(answer.status, answer.body).toBe(401);
    expect(answer.json<{ error: { code: string } }>().error.code).toBe('unauthorized');
    for (const token of double.accessTokens.keys()) expect(answer.body).not.toContain(token);
    const rows = await v.json<
      Array<{ action: string; actor: string; outcome: string; detail: { error?: string } }>
    >(['audit', 'list', '--action', 'token.serve']);
    expect(rows.map((r) => [r.actor, r.outcome, r.detail.error])).toEqual([
      ['reader-us', 'denied', 'unauthorized'],
    ]);
  });

  it.runIf(DB_KIND === 'postgres')(
    'checks what it holds as soon as its LISTEN connection is back: a change no one was told of is seen at once',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const reader = await client(v, ['reader', '--all']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
      // What the daemon misses while its LISTEN connection is down (PostgreSQL restarting, a failover):
      // a change made without a notification reaching it. Then the connection drops and comes back.
      await v.session(async (query) => {
        await query("update ad_account_connections set status = 'needs_reauth' where name = 'acct-a'");
        const listeners = await query<{ pid: number }>(
          "select pid from pg_stat_activity where datname = current_database() and application_name = 'credvault-daemon-listen'",
        );
        expect(listeners).toHaveLength(1);
        await query('select pg_terminate_backend($1)', [listeners[0]!.pid]);
      });
      await until(() => daemon.logs().includes('listening for changes again'), { intervalMs: 100 });
      expect(daemon.logs()).toContain('listening for changes again');
      // Well before the 30-second check would have seen it.
      await vi.waitFor(
        async () =>
          expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(409),
        { timeout: 5_000, interval: 100 },
      );
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'serves nothing from memory while its LISTEN connection is not back after PostgreSQL restarted: a connection and a client revoked meanwhile are refused at once, not served on (their notifications reached no one)',
    async () => {
      const { v, reader, other, proxy, daemon, token } = await daemonBehindProxy();
      // PostgreSQL stopped, then started again: the daemon's pool connects again at once, its LISTEN
      // connection does not (postgres.js tried again only 4 to 18 s later; here it gets through only
      // once restore() lets it).
      proxy.down();
      await sleep(2000);
      proxy.restore();
      proxy.blackholeListeners();
      await until(async () => (await token('acct-b', reader)).status === 200, { intervalMs: 100 });
      // Revoked on the database itself, not through the proxy: the notifications are sent, and no
      // daemon hears them.
      const revoked = await v.cli(['connections', 'revoke', 'acct-a']);
      expect(revoked.code, revoked.stderr).toBe(0);
      const refused = await token('acct-a', reader);
      expect(refused.status, refused.body).toBe(409);
      expect((await v.cli(['clients', 'revoke', 'other'])).code).toBe(0);
      expect((await token('acct-b', other)).status).toBe(401);
      // While it does not listen it still serves, from the database, and /healthz says it is up.
      expect((await token('acct-b', reader)).status).toBe(200);
      const health = await daemon.get('/healthz');
      expect(health.status, health.body).toBe(200);
      expect(health.json()).toMatchObject({ status: 'ok', listening: false });
      // doctor says so, with what to do: a warning (exit 0), since every answer is still right.
      const doctor = await v.cli(['doctor', '--json'], { env: { DATABASE_URL: proxy.url } });
      expect(doctor.code, doctor.stderr).toBe(0);
      const report = JSON.parse(doctor.stdout) as { ok: boolean; checks: Array<Record<string, unknown>> };
      expect(report.ok).toBe(true);
      const check = report.checks.find((c) => c.name === 'daemon')!;
      expect(Object.keys(check)).toEqual(['name', 'status', 'message', 'fix']);
      expect(check.status).toBe('warning');
      expect(check.message).toMatch(/^running \(pid \d+, unix:.*\), .*not listening for changes/);
      expect(check.message).toContain('it reads the database at every token request');
      expect(check.fix).toContain('a pooler in transaction mode');
      expect(check.fix).toContain('listen_lost');
      // Its LISTEN back: the daemon checks what it holds, serves from memory again, and hears changes.
      proxy.restore();
      await until(() => daemon.logs().includes('listening for changes again'), { intervalMs: 100 });
      expect(daemon.logs()).toContain('listening for changes again');
      expect((await daemon.get('/healthz')).json()).toMatchObject({ listening: true });
      const listening = await v.cli(['doctor', '--json'], { env: { DATABASE_URL: proxy.url } });
      expect(
        JSON.parse(listening.stdout).checks.find((c: { name: string }) => c.name === 'daemon'),
      ).toMatchObject({
        status: 'ok',
        fix: null,
      });
      expect((await token('acct-b', reader)).status).toBe(200);
      expect((await v.cli(['connections', 'revoke', 'acct-b'])).code).toBe(0);
      await vi.waitFor(async () => expect((await token('acct-b', reader)).status).toBe(409), {
        timeout: 5_000,
        interval: 100,
      });
      expect(daemon.logs().match(/not listening for changes/g)).toHaveLength(1);
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'finds out within seconds that its LISTEN connection stopped answering (a partition: nothing closes it), and from then on serves nothing from memory: a connection and a client revoked are refused at once',
    async () => {
      const { v, reader, other, proxy, daemon, token } = await daemonBehindProxy();
      const cutAt = Date.now();
      proxy.blackholeListeners();
      // Its heartbeat (a notification to itself) does not come back: within seconds it says so.
      await until(() => daemon.logs().includes('not listening for changes'), {
        timeoutMs: 10_000,
        intervalMs: 50,
      });
      const noticedIn = Date.now() - cutAt;
      const revoked = await v.cli(['connections', 'revoke', 'acct-a']);
      expect(revoked.code, revoked.stderr).toBe(0);
      const refused = await token('acct-a', reader);
      expect(refused.status, refused.body).toBe(409);
      expect((await v.cli(['clients', 'revoke', 'other'])).code).toBe(0);
      expect((await token('acct-b', other)).status).toBe(401);
      expect((await token('acct-b', reader)).status).toBe(200);
      expect(daemon.logs()).toContain('not listening for changes');
      expect(noticedIn).toBeLessThan(8_000);
    },
  );

  it('keeps one unbroken audit chain while it serves in bursts and other processes write beside it', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const reader = await client(v, ['reader', '--all']);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const burst = (n: number, ref = 'acct-a') =>
      Promise.all(
        Array.from({ length: n }, () => daemon.get(`/v1/connections/${ref}/token`, { token: reader })),
      );
    // Bursts from the daemon, each followed by a write from another process (which moves the chain
    // head under the daemon), and a last burst that must pick the chain up from there.
    const answers = [...(await burst(80))];
    await client(v, ['second', '--all']);
    answers.push(...(await burst(80)));
    await v.cli(['connections', 'rename', 'acct-a', 'acct-renamed']);
    answers.push(...(await burst(80, 'acct-renamed')));
    expect(answers.map((a) => a.status).filter((s) => s !== 200)).toEqual([]);
    const rows = await v.json<Array<{ action: string; actor: string }>>(['audit', 'list', '--limit', '1000']);
    expect(rows.filter((r) => r.action === 'token.serve' && r.actor === 'reader')).toHaveLength(240);
    const verify = await v.json<{ ok: boolean; problems: unknown[] }>(['audit', 'verify']);
    expect(verify).toMatchObject({ ok: true, problems: [] });
  });

  it('a token another process refreshes (connections refresh --force) is served new at once, not the one the daemon held', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const reader = await client(v, ['reader', '--all']);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const served = async () =>
      (await daemon.get('/v1/connections/acct-a/token', { token: reader })).json<{ access_token: string }>()
        .access_token;
    const before = await served();
    expect(await served()).toBe(before); // held in the daemon's cache
    const refreshed = await v.cli(['connections', 'refresh', 'acct-a', '--force']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    // --format env is not the fast path's: it reads the database, as without a daemon.
    const direct = (await v.cli(['token', 'get', 'acct-a', '--format', 'env'], { secretOutput: true }))
      .stdout;
    let after = await served();
    // The notification arrives after the refresh's commit; give it a moment, not the cache's 30 s.
    for (let i = 0; i < 20 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = await served();
    }
    expect(after).not.toBe(before);
    expect(direct).toContain(after);
  });

  it('refuses to serve tokens when the audit log cannot be written (fail closed)', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const reader = await client(v, ['reader', '--all']);
    await v.refuseAuditWrites();
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const refused = await daemon.get('/v1/connections/acct-a/token', { token: reader });
    expectRefusedUnaudited(refused, double);
    // The log says why, not the statement that failed.
    expect(daemon.logs()).toContain('audit is read-only');
    expect(daemon.logs()).not.toContain('Failed query');
  });

  it.runIf(DB_KIND === 'postgres')(
    'a token it holds in memory is refused too once the audit log cannot be written',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const reader = await client(v, ['reader', '--all']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      for (let i = 0; i < 2; i++)
        expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
      await v.refuseAuditWrites();
      const refused = await daemon.get('/v1/connections/acct-a/token', { token: reader });
      expectRefusedUnaudited(refused, double);
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'answers 503 with Retry-After, not 500, while the database is unreachable',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const reader = await client(v, ['reader', '--all']);
      // PostgreSQL behind a proxy this test can take away.
      const { createServer, connect } = await import('node:net');
      const upstream = new URL(v.databaseUrl!);
      const piped = new Set<import('node:net').Socket>();
      const proxy = createServer((socket) => {
        const server = connect(Number(upstream.port || 5432), upstream.hostname);
        for (const s of [socket, server]) {
          piped.add(s);
          s.on('error', () => {});
          s.on('close', () => piped.delete(s));
        }
        socket.pipe(server).pipe(socket);
      });
      const port = await freePort();
      await new Promise<void>((resolve) => proxy.listen(port, '127.0.0.1', resolve));
      cleanups.push(async () => proxy.close());
      const through = new URL(v.databaseUrl!);
      through.host = `127.0.0.1:${port}`;
      const daemon = await startDaemon(v, { env: { DATABASE_URL: through.toString() } });
      cleanups.push(() => daemon.stop());
      expect((await daemon.get('/v1/connections', { token: reader })).status).toBe(200);
      proxy.close();
      for (const s of piped) s.destroy();
      const answer = await daemon.get('/v1/connections', { token: reader });
      expect(answer.status, daemon.logs()).toBe(503);
      expect(answer.headers['retry-after']).toBe('5');
      expect(answer.json()).toEqual({
        error: { code: 'unavailable', message: 'the database cannot be used now' },
      });
      // The cause is in the log, written once the answer has gone (so not always there yet).
      await until(() => daemon.logs().includes('"msg":"request failed: the database is unreachable'));
      expect(daemon.logs()).toContain('"msg":"request failed: the database is unreachable');
    },
  );

  it('a refresh whose answer cannot be written (audit read-only) is not retried at once: the grant waits, and the log says why', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'unwritable');
    await v.refuseAuditWrites();
    await v.sql(
      "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '1 hour'",
    );
    const attempts = double.refreshAttempts;
    const daemon = await startDaemon(v);
    await until(() => double.refreshAttempts !== attempts, { intervalMs: 50 });
    expect(double.refreshAttempts).toBe(attempts + 1);
    // It was tried again every second before; now it waits about 30 s, then longer each time.
    await new Promise((r) => setTimeout(r, 4_000));
    expect(double.refreshAttempts).toBe(attempts + 1);
    expect(daemon.logs()).toContain('audit is read-only');
    expect(await daemon.stop('SIGTERM')).toBe(0);
    const [row] = await v.sql<{ wait: number; leased: boolean; code: string; message: string }>(
      `select extract(epoch from cooldown_until - now())::float as wait, lease_owner is not null as leased,
         last_error_code as code, last_error_message as message
       from oauth_tokens_vault`,
    );
    expect(row!.wait).toBeGreaterThan(15);
    expect(row!.leased).toBe(false);
    // Reads meanwhile answer from the recorded reason, as after a platform failure.
    expect(row!.code).toBe('transient');
    expect(row!.message).toContain('audit is read-only');
  });

  // What the sweep does with a grant it cannot open; the cooldown it records is written by the same
  // statement as after the unwritable refresh above, which runs on both databases.
  it.runIf(ONCE)(
    'a grant whose refresh token does not decrypt waits too, before any platform call, with the reason recorded',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'broken');
      // Its access token copied over its refresh token: it does not open in that column.
      await v.sql(
        "update oauth_tokens_vault set refresh_token_enc = access_token_enc, access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '1 hour'",
      );
      const attempts = double.refreshAttempts;
      const daemon = await startDaemon(v);
      await until(() => daemon.logs().includes('the grant waits'), { intervalMs: 50 });
      expect(await daemon.stop('SIGTERM')).toBe(0);
      expect(double.refreshAttempts).toBe(attempts);
      const [row] = await v.sql<{ wait: number; message: string }>(
        `select extract(epoch from cooldown_until - now())::float as wait, last_error_message as message
       from oauth_tokens_vault`,
      );
      expect(row!.wait).toBeGreaterThan(15);
      expect(row!.message).toContain('does not decrypt');
    },
  );

  // Which grants are due is the claiming statement's condition: the statement every sweep runs on
  // both databases; what is checked here is its clauses' interval arithmetic, PostgreSQL's on both.
  it.runIf(ONCE)(
    'refreshes a grant unused for a third of its platform’s idle limit, not a younger one',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'idle');
      await adopt('988', 'recent');
      const versions =
        'select c.name, g.version from oauth_tokens_vault g join ad_account_connections c on c.token_id = g.id order by c.name';
      // Both valid for two hours; Microsoft drops a refresh token unused for 90 days: kept alive at 30.
      const set = await v.session(async (query) => {
        await query(`update oauth_tokens_vault g set access_token_expires_at = now() + interval '2 hours',
        last_refreshed_at = now() - (case c.name when 'idle' then interval '31 days' else interval '29 days' end)
        from ad_account_connections c where c.token_id = g.id`);
        return query<{ name: string; version: number }>(versions);
      });
      expect(set).toEqual([
        { name: 'idle', version: 1 },
        { name: 'recent', version: 1 },
      ]);
      // Its first sweep claimed every due grant at once: a second refresh would have come with it.
      // (The platform's side is watched: on the embedded database the data is the daemon's meanwhile.)
      const attempts = await firstSweep(v, double, [], 500);
      expect(await v.sql<{ name: string; version: number }>(versions)).toEqual([
        { name: 'idle', version: 2 },
        { name: 'recent', version: 1 },
      ]);
      expect(double.refreshAttempts).toBe(attempts + 1);
    },
  );

  it.runIf(ONCE)(
    'a --refresh-window longer than the tokens live refreshes a grant half-way through its token’s life, not at every sweep',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'young');
      await adopt('988', 'old');
      // 1-hour tokens: one refreshed 2 minutes ago, one 40 minutes ago. A 2h window holds both; only
      // the one past half its token's life is due.
      await v.sql(`update oauth_tokens_vault g set
      access_token_expires_at = now() + (case c.name when 'young' then interval '58 minutes' else interval '20 minutes' end),
      last_refreshed_at = now() - (case c.name when 'young' then interval '2 minutes' else interval '40 minutes' end)
      from ad_account_connections c where c.token_id = g.id`);
      const attempts = await firstSweep(v, double, ['--refresh-window', '2h'], 1_500);
      const versions = await v.sql<{ name: string; version: number }>(
        'select c.name, g.version from oauth_tokens_vault g join ad_account_connections c on c.token_id = g.id order by c.name',
      );
      expect(versions).toEqual([
        { name: 'old', version: 2 },
        { name: 'young', version: 1 },
      ]);
      expect(double.refreshAttempts).toBe(attempts + 1);
    },
  );

  // The sweep's timer, whatever database it sweeps.
  it.runIf(ONCE)(
    'an --interval beyond what a timer holds (24.8 days) is slept in turns, not at once over and over',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const daemon = await startDaemon(v, { args: ['--interval', '30d'] });
      const lastSweep = async () => {
        let at: string | null = null;
        await until(
          async () => {
            at = (await daemon.get('/healthz')).json<{ last_sweep_at: string | null }>().last_sweep_at;
            return at !== null;
          },
          { intervalMs: 50 },
        );
        return at;
      };
      const first = await lastSweep();
      expect(first).toBeTruthy();
      await new Promise((r) => setTimeout(r, 2_000));
      // A sleep that a timer cut to 1 ms would have swept again and again meanwhile.
      expect(await lastSweep()).toBe(first);
      expect(await daemon.stop('SIGTERM')).toBe(0);
      expect(daemon.logs()).not.toContain('TimeoutOverflowWarning');
    },
  );

  it.runIf(ONCE)(
    'a claimed refresh that fails before anything is sent (its app disabled) leaves no refresh in doubt',
    async () => {
      const { double, v, app, adopt } = await setup();
      await adopt('987', 'acct-a');
      await v.sql(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
      );
      expect((await v.cli(['apps', 'disable', app.label])).code).toBe(0);
      const attempts = double.refreshAttempts;
      const daemon = await startDaemon(v, { args: ['--refresh-window', '30m'] });
      await until(() => daemon.logs().includes('the grant waits before it is tried again'));
      expect(daemon.logs()).toContain('the grant waits before it is tried again');
      expect(await daemon.stop('SIGTERM')).toBe(0);
      expect(double.refreshAttempts).toBe(attempts);
      const [grant] = await v.sql<{ in_flight: boolean; waits: boolean }>(
        'select refresh_in_flight_since is not null as in_flight, cooldown_until > now() as waits from oauth_tokens_vault',
      );
      expect(grant).toEqual({ in_flight: false, waits: true });
      const report = await v.json<{ connections: Array<{ problem: string | null }> }>(['status']);
      expect(report.connections[0]!.problem ?? '').not.toContain('never recorded its answer');
    },
  );

  it.runIf(ONCE)(
    'gives back unsent, on SIGTERM, a claim waiting for its rate-limiting platform',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'first');
      await adopt('988', 'second');
      await v.sql(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
      );
      // The first refresh is told to wait two minutes (past its lease): the platform is paused.
      double.faults.failNext(1, { status: 429, headers: { 'retry-after': '120' } });
      const attempts = double.refreshAttempts;
      const daemon = await startDaemon(v, { args: ['--refresh-window', '30m', '--concurrency', '1'] });
      await until(() => daemon.logs().includes('pausing it for'));
      // For as long as it asked (not a fixed minute).
      expect(daemon.logs()).toContain('microsoft_ads is rate limiting refreshes; pausing it for 120 s');
      expect(await daemon.stop('SIGTERM')).toBe(0);
      // The second claim waited for the pause and went back when the daemon stopped, never sent.
      expect(double.refreshAttempts).toBe(attempts + 1);
      const leases = await v.sql<{ lease_owner: string | null; refresh_in_flight_since: Date | null }>(
        'select lease_owner, refresh_in_flight_since from oauth_tokens_vault',
      );
      expect(leases).toEqual([
        { lease_owner: null, refresh_in_flight_since: null },
        { lease_owner: null, refresh_in_flight_since: null },
      ]);
    },
  );

  it.runIf(ONCE)(
    'a platform rate limiting the daemon does not hold up the others: its claims go back, and are not made again until the pause ends',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'ms-1');
      await adopt('988', 'ms-2');
      const google = await startGoogleDouble();
      cleanups.push(() => google.close());
      const gapp = await addAppFor(v, 'google_ads', google as never);
      const grant = google.issueGrant({ clientId: gapp.clientId, scope: GOOGLE_ADWORDS_SCOPE } as never);
      await adoptGrant(v, 'google_ads', gapp.label, grant.refreshToken, {
        accounts: ['1234567890'],
        name: 'g',
      });
      // All due; Microsoft's first (they expire sooner): both claimed in the first round of two.
      await v.sql(`update oauth_tokens_vault set last_refreshed_at = now() - interval '59 minutes',
      access_token_expires_at = now() + case platform when 'google_ads' then interval '3 minutes' else interval '1 minute' end`);
      double.faults.failNext(1, { status: 429, headers: { 'retry-after': '120' } });
      const googleBefore = google.refreshAttempts;
      const started = Date.now();
      const daemon = await startDaemon(v, { args: ['--concurrency', '1'] });
      // Google's refresh comes long before Microsoft's 120 s pause ends (the daemon's start included:
      // on a slow, busy machine the embedded database alone can take ten seconds to open).
      await until(() => google.refreshAttempts !== googleBefore);
      const waited = Date.now() - started;
      expect(await daemon.stop('SIGTERM')).toBe(0);
      expect(google.refreshAttempts).toBe(googleBefore + 1);
      expect(waited).toBeLessThan(60_000);
      expect(daemon.logs()).toContain('microsoft_ads is rate limiting refreshes; pausing it for 120 s');
    },
  );

  it.runIf(ONCE)(
    'SIGTERM while a refresh waits out a Retry-After: the wait ends, the 429 is recorded, exit 0 at once',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'acct-a');
      await v.sql(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
      );
      // Within the lease: the token service would wait 20 s and try again.
      double.faults.failNext(1, { status: 429, headers: { 'retry-after': '20' } });
      const attempts = double.refreshAttempts;
      const daemon = await startDaemon(v);
      await until(() => double.refreshAttempts !== attempts);
      await new Promise((r) => setTimeout(r, 500));
      const signalled = Date.now();
      expect(await daemon.stop('SIGTERM')).toBe(0);
      // Well before the 20 s the wait had left, and before the 10 s after which a shutdown stops
      // waiting for refreshes in flight (a slow, busy machine takes a few seconds to close the database).
      expect(Date.now() - signalled).toBeLessThan(9_000);
      expect(double.refreshAttempts).toBe(attempts + 1);
      const [grant] = await v.sql<{ leased: boolean; in_flight: boolean; code: string | null }>(
        `select lease_owner is not null as leased, refresh_in_flight_since is not null as in_flight,
         last_error_code as code from oauth_tokens_vault`,
      );
      expect(grant).toEqual({ leased: false, in_flight: false, code: 'rate_limited' });
    },
  );

  it('finishes and stores a refresh in flight on SIGTERM, then exits 0', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    // Refreshed 59 minutes ago, expiring in one: due for the daemon.
    const [before] = await v.session(async (query) => {
      await query(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
      );
      return query<{ version: number }>('select version from oauth_tokens_vault');
    });
    const reader = await client(v, ['reader', '--all']);
    double.faults.latencyMs = 2500;
    const attempts = double.refreshAttempts;
    const daemon = await startDaemon(v, { args: ['--refresh-window', '30m'] });
    await until(() => double.refreshAttempts !== attempts);
    expect(double.refreshAttempts).toBe(attempts + 1);
    daemon.child.kill('SIGTERM');
    // While it drains: /healthz says so with 503, and no new work is taken.
    const health = await untilDraining(daemon);
    expect(health.status).toBe(503);
    expect(health.json()).toMatchObject({
      shutting_down: true,
      reasons: expect.arrayContaining(['shutting down']),
    });
    const refused = await daemon.get('/v1/connections/acct-a/token', { token: reader });
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('1');
    expect(await daemon.exited).toBe(0);
    // Not on a terminal: the log is JSON lines (pino).
    const lines = daemon.logs().trim().split('\n');
    const records = lines.map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(records.map((r) => r.msg)).toContain('SIGTERM: shutting down');
    const [after] = await v.sql<{ version: number; lease_owner: string | null }>(
      'select version, lease_owner from oauth_tokens_vault',
    );
    expect(after!.version).toBe(before!.version + 1);
    expect(after!.lease_owner).toBeNull();
    expect(daemon.logs()).toContain('SIGTERM: shutting down');
  });
});

describe('a refresh that outlasts the shutdown', () => {
  it('SIGTERM while the platform does not answer: the daemon still ends within 10 s, its run file removed; the refresh stays marked in flight', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    await v.sql(
      "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
    );
    double.faults.latencyMs = 60_000;
    const attempts = double.refreshAttempts;
    const daemon = await startDaemon(v, { args: ['--refresh-window', '30m'] });
    await until(() => double.refreshAttempts !== attempts);
    expect(double.refreshAttempts).toBe(attempts + 1);
    const signalled = Date.now();
    const code = await daemon.stop('SIGTERM');
    const took = Date.now() - signalled;
    double.faults.latencyMs = 0;
    expect(code).toBe(1);
    expect(took).toBeLessThan(10_000);
    expect(took).toBeGreaterThan(7_500); // it did wait for the refresh first
    // It names what it left: the grant whose platform did not answer, and its connection.
    const [{ id }] = (await v.sql<{ id: string }>('select id from oauth_tokens_vault')) as [{ id: string }];
    expect(daemon.logs()).toContain(
      `shutdown took longer than 8.5s; exiting, abandoning 1 refresh in flight (left marked in flight): grant ${id} (microsoft_ads, acct-a)`,
    );
    expect(existsSync(join(v.home, 'run', 'daemon.json'))).toBe(false);
    // The refresh left without an answer: marked in flight (status reports it once its lease lapses).
    const [grant] = await v.sql<{ in_flight: boolean }>(
      'select refresh_in_flight_since is not null as in_flight from oauth_tokens_vault',
    );
    expect(grant!.in_flight).toBe(true);
  });
});

describe.runIf(DB_KIND === 'postgres')('a database that stops answering', () => {
  it('a table someone locked (psql: lock table … in access exclusive mode): the sweep gives up at the lock timeout, /healthz says why, and the sweep refreshes once the lock is gone', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v, { args: ['--interval', '1s'], env: { CREDVAULT_DB_TIMEOUT: '3' } });
    cleanups.push(() => daemon.stop());
    await untilStarted(daemon);
    const attempts = double.refreshAttempts;
    // The lock, held as from psql; the same transaction makes the grant due, which the daemon sees
    // once the lock is gone.
    const release = await lockTokensTable(v);
    const stuck = await healthUntil(daemon, (h) => h.status !== 200);
    expect(stuck.status).toBe(503);
    expect(stuck.json<{ reasons: string[] }>().reasons).toContain(
      'last sweep failed: canceling statement due to lock timeout',
    );
    expect(daemon.logs()).toContain('canceling statement due to lock timeout');
    await release();
    const healthy = await healthUntil(daemon, (h) => h.status === 200 && double.refreshAttempts > attempts);
    expect(healthy.status).toBe(200);
    expect(double.refreshAttempts).toBe(attempts + 1);
  });

  it('a partition (connections taken, nothing answered): /healthz answers 503 within its deadline, and once the database answers again the sweep goes on by itself', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    const daemon = await startDaemon(v, {
      args: ['--interval', '1s'],
      env: { DATABASE_URL: proxy.url, CREDVAULT_DB_TIMEOUT: '2' },
    });
    cleanups.push(() => daemon.stop());
    await untilStarted(daemon);
    const attempts = double.refreshAttempts;
    proxy.blackhole();
    await v.sql(MAKE_DUE); // straight to the server
    for (let i = 0; i < 2; i++) {
      const asked = Date.now();
      const health = await daemon.get('/healthz');
      expect(Date.now() - asked).toBeLessThan(3500);
      expect(health.status).toBe(503);
      // No answer within /healthz's deadline, or a connection that did not start within the daemon's.
      const { reasons } = health.json<{ reasons: string[] }>();
      expect(
        reasons.some((r) => r.startsWith('database unreachable: ')),
        reasons.join('; '),
      ).toBe(true);
    }
    // Long enough for the sweep's statements to be lost in the partition and given up.
    await sleep(3000);
    expect(double.refreshAttempts).toBe(attempts);
    proxy.restore();
    const healthy = await healthUntil(daemon, (h) => h.status === 200 && double.refreshAttempts > attempts);
    expect(healthy.status).toBe(200);
    expect(double.refreshAttempts).toBe(attempts + 1);
    expect(daemon.logs()).toContain('the database did not answer for');
  });
});

describe.runIf(DB_KIND === 'postgres')('a database restart while the platform answers a refresh', () => {
  /**
   * A daemon behind the proxy refreshing a Microsoft grant (rotating, strict) that the platform
   * answers `latencyMs` after the request; the database is cut (proxy.down()) once the request is out
   * and stays so for `downMs`. Resolves the platform's refresh count before that request.
   */
  async function answerWhileDown(latencyMs: number, downMs: number) {
    const { double, v, adopt } = await setup();
    double.settings.strictRotation = true;
    await adopt('987', 'acct-a');
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    const daemon = await startDaemon(v, { args: ['--interval', '1s'], env: { DATABASE_URL: proxy.url } });
    cleanups.push(() => daemon.stop());
    await untilStarted(daemon);
    const attempts = double.refreshAttempts;
    double.faults.latencyMs = latencyMs;
    try {
      await v.sql(MAKE_DUE); // straight to the server
      expect(await until(() => double.refreshAttempts > attempts, { intervalMs: 20 })).toBe(true);
      proxy.down();
      await sleep(downMs);
    } finally {
      double.faults.latencyMs = 0;
    }
    return { double, v, proxy, daemon, attempts };
  }

  it('the daemon keeps the rotated refresh token and stores it once the database is back: no second refresh with the used one', async () => {
    // Every connection closed and refused for longer than one try and its one retry took.
    const { double, v, proxy, attempts } = await answerWhileDown(1_500, 4_000);
    proxy.restore();
    const version = async () =>
      (await v.sql<{ version: number }>('select version from oauth_tokens_vault'))[0]!.version;
    // Before, the answer was given up at once and the next sweep sent the used refresh token: the
    // platform ended the grant (needs_reauth).
    expect(await until(async () => (await version()) === 2, { timeoutMs: 30_000, intervalMs: 200 })).toBe(
      true,
    );
    expect(double.refreshAttempts).toBe(attempts + 1);
    const forced = await v.cli(['connections', 'refresh', 'acct-a', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
  });

  it('SIGTERM while the refresh answer waits for the database: the daemon ends at its deadline naming the grant whose rotated refresh token is lost', async () => {
    // The answer comes while the database is down; its write fails and is tried again.
    const { double, v, daemon, attempts } = await answerWhileDown(700, 1_500);
    expect(await daemon.stop('SIGTERM')).toBe(1);
    const [{ id }] = (await v.sql<{ id: string }>('select id from oauth_tokens_vault')) as [{ id: string }];
    // One line names the grant and its connection once, that its answer is lost, and what that costs
    // (before, also as a refresh in flight, which it was not: the platform had answered).
    expect(daemon.logs()).toContain(
      `shutdown took longer than 8.5s; exiting, abandoning 1 refresh answer the database did not take, lost with this process (where the platform rotated the refresh token, its connections need \`credvault connect\` again once it ends the old one): grant ${id} (microsoft_ads, acct-a)`,
    );
    expect(double.refreshAttempts).toBe(attempts + 1);
  });
});

describe.runIf(DB_KIND === 'postgres')('a shutdown while a statement hangs (no database limit)', () => {
  it('SIGTERM while the sweep waits on a locked table: the daemon ends within 10 s, its run file removed, and says it left the statement unanswered', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v, { args: ['--interval', '1s'], env: { CREDVAULT_DB_TIMEOUT: '0' } });
    await untilStarted(daemon);
    await lockTokensTable(v);
    await sleep(1500); // the next sweep's claim now waits for the lock
    const signalled = Date.now();
    const code = await daemon.stop('SIGTERM');
    const took = Date.now() - signalled;
    expect(code).toBe(1);
    expect(took).toBeLessThan(10_000);
    expect(daemon.logs()).toMatch(
      /shutdown took longer than 8\.5s; exiting, abandoning \d+ database statements? unanswered \(the oldest sent \d+ s ago\)/,
    );
    expect(existsSync(join(v.home, 'run', 'daemon.json'))).toBe(false);
  });

  it('SIGTERM while the daemon starts and waits on a locked table: it does not wait for the start, and ends within 10 s saying so', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    await lockTokensTable(v, 'data_keys'); // the start reads the vault's data key
    const child = v.spawn(['daemon', '--listen', `unix:${join(v.root, 'daemon.sock')}`], {
      env: { CREDVAULT_DB_TIMEOUT: '0' },
    });
    child.stdin!.end();
    let logs = '';
    child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    await until(() => logs.includes('credvault daemon starting'), { intervalMs: 50 });
    await sleep(1000);
    expect(logs).not.toContain('listening on');
    const signalled = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(15_000).then(() => 'still running')]);
    const took = Date.now() - signalled;
    expect(code).toBe(1);
    expect(took).toBeLessThan(10_000);
    expect(logs).toMatch(
      /SIGTERM came while starting, and the start did not end within 8\.5s; exiting, abandoning 1 database statement unanswered/,
    );
  });
});

describe('token get beside a running daemon', () => {
  it.runIf(ONCE)(
    'a reader that stopped reading ends it quietly (exit 0); output it cannot write (a full disk) ends it with one line and exit 1, with or without a daemon',
    async () => {
      const { v, adopt } = await setup();
      await adopt('987', 'acct-a');
      /** `credvault ARGS` with its stdout a pipe closed at once, or a file descriptor. */
      const run = (args: string[], stdout: 'closed' | number) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, [BIN, ...args], {
            env: v.env as NodeJS.ProcessEnv,
            stdio: ['ignore', stdout === 'closed' ? 'pipe' : stdout, 'pipe'],
          });
          if (stdout === 'closed') child.stdout!.destroy();
          let stderr = '';
          child.stderr!.on('data', (d: Buffer) => {
            stderr += d.toString();
          });
          child.on('close', (code) => resolve({ code, stderr }));
        });
      const full = openSync('/dev/full', 'w');
      try {
        const expectBoth = async () => {
          for (const args of [
            ['token', 'get', 'acct-a'],
            ['connections', 'list', '--json'],
          ]) {
            const closed = await run(args, 'closed');
            expect([closed.code, closed.stderr], args.join(' ')).toEqual([0, '']);
            const noSpace = await run(args, full);
            expect(noSpace.code, noSpace.stderr).toBe(1);
            expect(noSpace.stderr.trim().split('\n')).toHaveLength(1);
            expect(noSpace.stderr).toContain('could not write to standard output (ENOSPC');
          }
        };
        await expectBoth();
        // token get through the daemon (the fast path) too.
        const daemon = await startDaemon(v);
        cleanups.push(() => daemon.stop());
        await expectBoth();
      } finally {
        closeSync(full);
      }
    },
  );

  it('asks the daemon (the same token, audited as the person, whatever the characters of their name)', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const served = await v.cli(['token', 'get', 'acct-a', '--format', 'json'], { secretOutput: true });
    expect(served.code, served.stderr).toBe(0);
    const doc = JSON.parse(served.stdout) as { access_token: string; external_account_id: string };
    expect(double.accessTokens.has(doc.access_token)).toBe(true);
    expect(doc.external_account_id).toBe('987');
    // Names with spaces, punctuation and letters beyond ASCII are recorded as the full path would.
    const direct = await v.cli(['token', 'get', 'acct-a', '--format', 'header'], {
      secretOutput: true,
      env: { CREDVAULT_ACTOR: '运营', CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(direct.code, direct.stderr).toBe(0);
    expect(direct.stdout).toBe(`Authorization: Bearer ${doc.access_token}\n`);
    const spaced = await v.cli(['token', 'get', 'acct-a'], {
      secretOutput: true,
      env: { CREDVAULT_ACTOR: 'Jörg Müller (deploy #42)', CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(spaced.code, spaced.stderr).toBe(0);
    const auditRows = () =>
      v.json<
        Array<{
          action: string;
          actor: string;
          detail: { purpose?: string; via?: string; refreshed?: boolean };
        }>
      >(['audit', 'list', '--limit', '1000'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    const serves = (rows: Array<{ action: string }>) => rows.filter((r) => r.action === 'token.serve').length;
    const audit = await auditRows();
    // Recorded as the full path records it (its purpose, whether it refreshed), through the daemon.
    expect(
      audit
        .filter((r) => r.action === 'token.serve')
        .map((r) => [r.actor, r.detail.purpose, r.detail.via, r.detail.refreshed]),
    ).toEqual(
      expect.arrayContaining([
        ['运营', 'token get --format header', 'daemon', false],
        ['Jörg Müller (deploy #42)', 'token get --format raw', 'daemon', false],
        ['test-operator', 'token get --format json', 'daemon', false],
      ]),
    );
    // A name with a tab (a control character) is kept as the full path keeps it.
    const tabbed = await v.cli(['token', 'get', 'acct-a'], {
      secretOutput: true,
      env: { CREDVAULT_ACTOR: 'night\tshift', CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(tabbed.code, tabbed.stderr).toBe(0);
    expect((await auditRows()).map((r) => r.actor)).toContain('night\tshift');
    // A caller with another key, or with none, is told so (exit 6) as it would be without a daemon:
    // the daemon serves only a caller configured with its own key.
    const servedBefore = serves(await auditRows());
    const otherKey = `${randomBytes(32).toString('base64url')}=`;
    const wrong = await v.cli(['token', 'get', 'acct-a'], {
      env: { CREDENTIAL_MASTER_KEY: otherKey, CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(wrong.code, wrong.stderr).toBe(6);
    expect(wrong.stdout).toBe('');
    expect(wrong.stderr).toContain('the master key does not match this vault');
    const garbled = await v.cli(['token', 'get', 'acct-a'], {
      env: { CREDENTIAL_MASTER_KEY: 'not-a-key', CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(garbled.code, garbled.stderr).toBe(6);
    expect(garbled.stdout).toBe('');
    // Refused without a row saying a token was served.
    expect(serves(await auditRows())).toBe(servedBefore);
    expect(await daemon.stop()).toBe(0);
  });
});

describe.runIf(DB_KIND === 'pglite')('the embedded database while the daemon runs', () => {
  it('serves its socket and writes its run file again when they are removed under it (rm -r run/, a cleaner of old files)', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const socket = join(v.home, 'run', '.s.PGSQL.5432');
    const runFile = join(v.home, 'run', 'daemon.json');
    const runText = readFileSync(runFile, 'utf8');
    rmSync(join(v.home, 'run'), { recursive: true });
    const list = () => v.cli(['connections', 'list', '--json'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    // Before, every command failed from then on: "in use by process … (credvault daemon)".
    expect(await until(async () => (await list()).code === 0, { timeoutMs: 15_000, intervalMs: 500 })).toBe(
      true,
    );
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(daemon.logs()).toContain('"event":"socket_restored"');
    // The run file too (before, doctor said no daemon ran, and token get stopped asking it).
    expect(await until(async () => existsSync(runFile), { timeoutMs: 10_000, intervalMs: 200 })).toBe(true);
    expect(readFileSync(runFile, 'utf8')).toBe(runText);
    expect(statSync(runFile).mode & 0o777).toBe(0o600);
    expect(daemon.logs()).toContain('"event":"run_file_restored"');
    const doctor = await v.json<{ checks: Array<{ name: string; status: string }> }>(['doctor']);
    expect(doctor.checks.find((c) => c.name === 'daemon')).toMatchObject({ status: 'ok' });
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(runFile)).toBe(false);
  });

  it('keeps every other command working through the daemon, token get included', async () => {
    const { double, v, app, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const listed = await v.json<Array<{ name: string }>>(['connections', 'list'], {
      env: { CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(listed.map((c) => c.name)).toEqual(['acct-a']);
    // Still the embedded database, though a PostgreSQL driver reaches it (it said "postgres").
    expect(
      (await v.json<{ kind: string }>(['db', 'status'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } })).kind,
    ).toBe('pglite');
    const token = await v.cli(['token', 'get', 'acct-a'], {
      secretOutput: true,
      env: { CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(token.code, token.stderr).toBe(0);
    expect(double.accessTokens.has(token.stdout.trim())).toBe(true);
    // The daemon's database keeps 32 MB of shared buffers, not PostgreSQL's 128 (DAEMON_SETTINGS).
    expect(await v.sql('show shared_buffers')).toEqual([{ shared_buffers: '32MB' }]);
    const added = await v.cli(['apps', 'add', 'microsoft_ads', '--from-file', '-'], {
      input: JSON.stringify({ label: 'second', client_id: 'x', developer_token: 'd' }),
      env: { CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    expect(added.code, added.stderr).toBe(0);
    // The token came through the daemon, audited as the person who ran token get.
    const audit = await v.json<Array<{ action: string; actor: string; detail: { purpose?: string } }>>([
      'audit',
      'list',
    ]);
    expect(audit.find((r) => r.action === 'token.serve')).toMatchObject({
      actor: 'test-operator',
      detail: { purpose: 'token get --format raw', via: 'daemon' },
    });
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(join(v.home, 'run', '.s.PGSQL.5432'))).toBe(false);
    void app;
  });

  it('on SIGTERM lets a command using the database through it finish (its rotated refresh token is stored), and one that starts meanwhile waits for the files', async () => {
    const { double, v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    double.faults.latencyMs = 2500;
    const attempts = double.refreshAttempts;
    const refreshing = v.cli(['connections', 'refresh', 'acct-a', '--force'], {
      env: { CREDVAULT_LOCK_TIMEOUT: '1' },
    });
    await until(() => double.refreshAttempts !== attempts);
    expect(double.refreshAttempts).toBe(attempts + 1);
    daemon.child.kill('SIGTERM');
    // Once the daemon has taken the signal, so that the listing below starts during the drain.
    await until(() => daemon.logs().includes('SIGTERM: shutting down'));
    expect(daemon.logs()).toContain('SIGTERM: shutting down');
    // The drain may outlast the default lock wait (5 s) on a slow machine: this one waits it out.
    const listing = v.json<Array<{ name: string }>>(['connections', 'list'], {
      env: { CREDVAULT_LOCK_TIMEOUT: '20' },
    });
    const refreshed = await refreshing;
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(await daemon.exited).toBe(0);
    expect((await listing).map((c) => c.name)).toEqual(['acct-a']);
    // Microsoft rotated the refresh token and took the old one back: the next refresh works only
    // with the one that command stored.
    double.faults.latencyMs = 0;
    const again = await v.cli(['connections', 'refresh', 'acct-a', '--force']);
    expect(again.code, again.stderr).toBe(0);
  });
});

describe('starting', () => {
  it('a SIGHUP or SIGTERM while the daemon starts waits for the start instead of ending it by default', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const start = () => {
      const child = v.spawn(['daemon', '--listen', `unix:${join(v.root, 'd.sock')}`]);
      child.stdin!.end();
      let logs = '';
      child.stderr!.on('data', (d: Buffer) => {
        logs += d.toString();
      });
      const exited = new Promise<number | string>((resolve) =>
        child.on('close', (code, signal) => resolve(code ?? signal ?? 'none')),
      );
      cleanups.push(async () => child.kill('SIGKILL'));
      const logged = async (text: string) => {
        await until(() => logs.includes(text), { intervalMs: 20 });
        expect(logs).toContain(text);
      };
      return { child, exited, logged, logs: () => logs };
    };
    // systemctl start, then at once systemctl reload: the reload is done once the daemon is ready.
    const reloaded = start();
    await reloaded.logged('credvault daemon starting');
    reloaded.child.kill('SIGHUP');
    await reloaded.logged('SIGHUP: reloaded the key source');
    expect(reloaded.logs().indexOf('listening on')).toBeLessThan(reloaded.logs().indexOf('SIGHUP: reloaded'));
    reloaded.child.kill('SIGTERM');
    expect(await reloaded.exited).toBe(0);
    // A stop while starting: a clean stop (exit 0, run file removed), not a death by signal.
    const stopped = start();
    await stopped.logged('credvault daemon starting');
    stopped.child.kill('SIGTERM');
    expect(await stopped.exited).toBe(0);
    expect(stopped.logs()).toContain('SIGTERM: shutting down');
    expect(existsSync(join(v.home, 'run', 'daemon.json'))).toBe(false);
  });

  it('refuses a second daemon for the same home at once (exit 2), naming the one that runs, whose run file stays', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    const second = await v.cli(['daemon', '--listen', `unix:${join(v.root, 'second.sock')}`]);
    expect(second.code, second.stderr).toBe(2);
    expect(second.stderr).toContain(`a credvault daemon (pid ${daemon.child.pid}, on unix:`);
    expect(second.stderr).toContain('need a CREDVAULT_HOME each');
    const run = JSON.parse(readFileSync(join(v.home, 'run', 'daemon.json'), 'utf8')) as { pid: number };
    expect(run.pid).toBe(daemon.child.pid);
    expect(await daemon.stop()).toBe(0);
  });

  it.runIf(DB_KIND === 'pglite')(
    'two daemons started at the same moment on the embedded database: one runs, the other is refused (exit 2), not after the lock’s wait',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      // A long wait for the lock: before, the one that lost waited all of it and exited 8 ("in use").
      const env = { CREDVAULT_LOCK_TIMEOUT: '60' };
      const started = ['a', 'b'].map((name) => {
        const child = v.spawn(['daemon', '--listen', `unix:${join(v.root, `${name}.sock`)}`], { env });
        cleanups.push(async () => {
          child.kill('SIGKILL');
        });
        let stderr = '';
        child.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString();
        });
        const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
        return { child, exited, stderr: () => stderr };
      });
      const first = await Promise.race(started.map(async (d) => ({ d, code: await d.exited })));
      expect(first.code, first.d.stderr()).toBe(2);
      expect(first.d.stderr()).toMatch(/a credvault daemon \(pid \d+\) already runs for /);
      // The other one runs, and stops cleanly.
      const other = started.find((d) => d !== first.d)!;
      other.child.kill('SIGTERM');
      expect(await other.exited).toBe(0);
    },
  );
});

// The log's format, whatever database the daemon serves.
describe.runIf(ONCE)('daemon --allowed-host', () => {
  it('serves the names it is given (any case, with a port) beside loopback, refuses any other, and a CORS preflight', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const daemon = await startDaemon(v, { args: ['--allowed-host', 'Creds.Internal'] });
    cleanups.push(() => daemon.stop());
    const health = (host: string) => daemon.get('/healthz', { headers: { host } });
    await until(async () => (await health('localhost')).status === 200);
    for (const host of ['creds.internal', 'CREDS.internal:8787', '127.0.0.1:8787'])
      expect((await health(host)).status, host).toBe(200);
    for (const host of ['other.internal', 'creds.internal.evil.example', 'evil.example:8787'])
      expect((await health(host)).status, host).toBe(403);
    // A browser's CORS preflight, from an allowed host too: refused, and no access-control-* header.
    const preflight = await daemon.request('OPTIONS', '/v1/connections/acct/token', {
      headers: {
        host: 'creds.internal',
        origin: 'https://creds.internal',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'authorization',
      },
    });
    expect(preflight.status).toBe(403);
    expect(Object.keys(preflight.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
  });

  it('checks the one host a request is for: two Host headers are refused (400), an absolute-form target is checked by its own authority, and [IPv6] is the same host with a port as without brackets', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const reader = await client(v, ['reader', '--all']);
    const daemon = await startDaemon(v, {
      args: ['--allowed-host', '[fd00::1]', '--allowed-host', 'fd00::2'],
    });
    cleanups.push(() => daemon.stop());
    /** The status of a request written as given on the daemon's socket (what node:http would not send). */
    const raw = (head: string) =>
      new Promise<number>((resolve, reject) => {
        const socket = createConnection({ path: daemon.listen.slice('unix:'.length) });
        let text = '';
        socket.setEncoding('utf8');
        socket.on('connect', () =>
          socket.write(`${head}authorization: Bearer ${reader}\r\nconnection: close\r\n\r\n`),
        );
        socket.on('data', (chunk: string) => {
          text += chunk;
        });
        socket.on('close', () => resolve(Number(text.split(' ')[1] ?? 0)));
        socket.on('error', reject);
      });
    // Before: 200, the first Host alone counted.
    expect(await raw('GET /v1/connections HTTP/1.1\r\nhost: localhost\r\nhost: evil.example\r\n')).toBe(400);
    expect(await raw('GET /v1/connections HTTP/1.1\r\nhost: evil.example\r\nhost: localhost\r\n')).toBe(400);
    expect(await raw('GET /v1/connections HTTP/1.1\r\nhost: localhost\r\n')).toBe(200);
    // The target's authority is the host (RFC 9112 §3.2.2); before, its Host header was.
    expect(await raw('GET http://evil.example/v1/connections HTTP/1.1\r\nhost: localhost\r\n')).toBe(403);
    expect(await raw('GET http://localhost:8787/v1/connections HTTP/1.1\r\nhost: localhost\r\n')).toBe(200);
    // Before: 403 with a port, for the bracketed form only.
    for (const host of ['[fd00::1]:8787', '[FD00::1]', '[fd00::2]:8787', '[fd00::2]'])
      expect((await daemon.get('/healthz', { headers: { host } })).status, host).toBe(200);
    for (const host of ['[fd00::3]:8787', 'fd00::1.evil.example'])
      expect((await daemon.get('/healthz', { headers: { host } })).status, host).toBe(403);
  });
});

describe.runIf(ONCE)('daemon --json', () => {
  it.skipIf(!existsSync('/usr/bin/script'))(
    'is taken (--json is every command’s): its log is JSON lines even at a terminal',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const port = await freePort();
      const child = spawn(
        '/usr/bin/script',
        ['-qec', `exec '${process.execPath}' '${BIN}' daemon --json --listen 127.0.0.1:${port}`, '/dev/null'],
        { env: { ...v.env } as NodeJS.ProcessEnv, cwd: v.root, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = '';
      const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      await until(() => out.includes('listening on'));
      // The daemon itself (script's child), by the pid in its run file.
      const { pid } = JSON.parse(readFileSync(join(v.home, 'run', 'daemon.json'), 'utf8')) as { pid: number };
      process.kill(pid, 'SIGTERM');
      await exited;
      const line = out.split(/\r?\n/).find((l) => l.includes('listening on'));
      expect(line, out).toBeDefined();
      expect(JSON.parse(line!.trim())).toMatchObject({ msg: expect.stringContaining('listening on') });
    },
  );
});

describe('systemd', () => {
  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
  // The unit file is printed without opening any database.
  it.runIf(analyze && ONCE)('daemon unit passes systemd-analyze verify', async () => {
    const v = await createVault({ initialized: false });
    cleanups.push(() => v.destroy());
    const unit = await v.cli(['daemon', 'unit', '--user', 'credvault']);
    expect(unit.code).toBe(0);
    for (const line of [
      'Type=notify',
      'LoadCredential=credential_master_key:',
      'StateDirectory=credvault',
      'RuntimeDirectory=credvault',
      'ProtectSystem=strict',
      'NoNewPrivileges=yes',
      'UMask=0077',
      'User=credvault',
    ]) {
      expect(unit.stdout).toContain(line);
    }
    expect(unit.stdout).not.toContain('MemoryDenyWriteExecute');
    const path = join(v.root, 'credvault.service');
    const verify = (text: string) => {
      writeFileSync(path, text);
      return new Promise<{ code: number; out: string }>((resolve) => {
        const child = spawn(analyze!, ['verify', path]);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.on('close', (code) => resolve({ code: code ?? 1, out }));
      });
    };
    const verified = await verify(unit.stdout);
    expect(verified.code, verified.out).toBe(0);

    // With a KMS key: its URI in the unit, and no master key credential (a missing file would stop
    // the service from starting).
    const uri = 'vault-transit://vault.internal:8200/transit/keys/credvault?label=50%"off"';
    const kms = await v.cli(['daemon', 'unit'], { env: { CREDENTIAL_KMS_URI: uri } });
    expect(kms.code, kms.stderr).toBe(0);
    expect(kms.stdout).not.toContain('LoadCredential=');
    expect(kms.stdout).toContain(
      'Environment="CREDENTIAL_KMS_URI=vault-transit://vault.internal:8200/transit/keys/credvault?label=50%%\\"off\\""',
    );
    expect(kms.stdout).toContain('VAULT_TOKEN');
    const withKms = await verify(kms.stdout);
    expect(withKms.code, withKms.out).toBe(0);
  });

  // PrivateTmp=yes gives the service an empty /tmp: a credvault installed there (an npx cache, an
  // unpacked tarball) would not start, as one under /home would not (ProtectHome=yes).
  it.runIf(ONCE)(
    'daemon unit warns of a credvault installed under /tmp, and says where to install it',
    async () => {
      const { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } = await import(
        'node:fs'
      );
      const install = mkdtempSync('/tmp/credvault-unit-');
      cleanups.push(async () => rmSync(install, { recursive: true, force: true }));
      // The entry point copied there (its real path is what the unit runs), the rest linked.
      mkdirSync(join(install, 'bin'));
      // The bin folder as a package installs it.
      for (const file of readdirSync(join(ROOT, 'bin')))
        copyFileSync(join(ROOT, 'bin', file), join(install, 'bin', file));
      for (const name of ['dist', 'node_modules', 'drizzle', 'package.json'])
        symlinkSync(join(ROOT, name), join(install, name));
      const printed = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [join(install, 'bin', 'credvault'), 'daemon', 'unit'], {
          env: { PATH: process.env.PATH, HOME: install, NO_COLOR: '1' },
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
      });
      expect(printed.code, printed.stderr).toBe(0);
      expect(printed.stdout).toContain(`ExecStart=${install}/bin/credvault daemon`);
      expect(printed.stdout).toContain('PrivateTmp=yes');
      expect(printed.stderr).toContain(
        'warning: credvault is installed under /tmp, which PrivateTmp=yes hides from the service',
      );
      expect(printed.stderr).toContain(
        'install credvault system-wide, e.g. `npm install -g` as root, outside /home, /root and /tmp',
      );
    },
  );

  /** A unix datagram socket standing in for systemd's NOTIFY_SOCKET: what it heard, one line per message. */
  async function notifyListener(v: TestVault) {
    const socket = join(v.root, 'notify.sock');
    const listener = spawn('python3', [
      '-c',
      `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    print(s.recv(4096).decode().replace("\\n", " "), flush=True)
`,
      socket,
    ]);
    cleanups.push(async () => listener.kill());
    let heard = '';
    listener.stdout.on('data', (d: Buffer) => (heard += d.toString()));
    await until(() => heard.includes('listening'), { intervalMs: 20 });
    // Else "nothing heard" below would say nothing about the daemon.
    expect(heard).toContain('listening');
    return { socket, heard: () => heard };
  }

  it.runIf(ONCE)(
    'writes to the journal each line with its syslog priority first, and to anything else the JSON alone',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      // The journal as systemd connects it: the stream's device and inode in JOURNAL_STREAM.
      const journal = (name: string) => {
        const path = join(v.root, name);
        const fd = openSync(path, 'w');
        const { dev, ino } = fstatSync(fd, { bigint: true });
        return {
          path,
          fd,
          stream: `${dev}:${ino}`,
          lines: () => readFileSync(path, 'utf8').trim().split('\n'),
        };
      };
      const run = (stderr: number, env: Record<string, string>) => {
        const child = spawn(process.execPath, [BIN, 'daemon', '--listen', `127.0.0.1:${0}`], {
          env: { ...v.env, ...env } as NodeJS.ProcessEnv,
          cwd: v.root,
          stdio: ['ignore', 'ignore', stderr],
        });
        return { child, exited: new Promise<number | null>((resolve) => child.on('close', resolve)) };
      };

      const a = journal('journal-a.log');
      const daemon = run(a.fd, { JOURNAL_STREAM: a.stream });
      await until(() => readFileSync(a.path, 'utf8').includes('listening on'));
      const keyFile = join(v.home, 'master.key');
      const right = readFileSync(keyFile, 'utf8');
      writeFileSync(keyFile, `${generateMasterKey()}\n`);
      daemon.child.kill('SIGHUP');
      await until(() => readFileSync(a.path, 'utf8').includes('does not open this vault'));
      writeFileSync(keyFile, right);
      daemon.child.kill('SIGTERM');
      expect(await daemon.exited).toBe(0);
      const priorities = { 20: '<7>', 30: '<6>', 40: '<4>', 50: '<3>', 60: '<2>' } as Record<number, string>;
      const lines = a.lines();
      for (const line of lines) {
        const [, prefix, json] = /^(<\d>)(\{.*)$/.exec(line) ?? [];
        expect(prefix, line).toBeDefined();
        expect(prefix).toBe(priorities[(JSON.parse(json!) as { level: number }).level]);
      }
      expect(lines.find((l) => l.includes('listening on'))).toMatch(/^<6>\{"level":30,/);
      expect(lines.find((l) => l.includes('does not open this vault'))).toMatch(/^<[34]>\{"level":[45]0,/);

      // A start that fails: its one line is fatal (crit).
      const b = journal('journal-b.log');
      const wrongKey = run(b.fd, { JOURNAL_STREAM: b.stream, CREDENTIAL_MASTER_KEY: generateMasterKey() });
      expect(await wrongKey.exited).toBe(6);
      expect(b.lines()).toEqual([
        expect.stringMatching(/^<6>\{"level":30,.*"msg":"credvault daemon starting/),
        expect.stringMatching(/^<2>\{"level":60,.*"event":"start_failed"/),
      ]);

      // stderr redirected elsewhere under systemd (JOURNAL_STREAM names another stream): JSON alone.
      const c = journal('elsewhere.log');
      const redirected = run(c.fd, { JOURNAL_STREAM: a.stream, CREDENTIAL_MASTER_KEY: generateMasterKey() });
      expect(await redirected.exited).toBe(6);
      expect(c.lines()).toEqual([
        expect.stringMatching(/^\{"level":30,.*starting/),
        expect.stringMatching(/^\{"level":60,/),
      ]);
      for (const { fd } of [a, b, c]) closeSync(fd);
    },
  );

  it('sends READY=1 only once the key opens the vault: a wrong key exits 6 without it', async () => {
    // The vault's data key, made by init, is what the key must open.
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const { socket, heard } = await notifyListener(v);
    const wrong = generateMasterKey(); // what `credvault key generate` prints
    const run = await v.cli(['daemon', '--listen', '127.0.0.1:0'], {
      env: { NOTIFY_SOCKET: socket, CREDENTIAL_MASTER_KEY: wrong },
    });
    expect(run.code).toBe(6);
    await new Promise((r) => setTimeout(r, 300));
    expect(heard()).not.toContain('READY=1');
  });

  it.runIf(DB_KIND === 'postgres')(
    'keeps sending WATCHDOG=1 while its database is down (it answers 503 meanwhile), and is healthy again by itself once the database is back',
    async () => {
      const v = await createVault();
      cleanups.push(() => v.destroy());
      const proxy = await startDbProxy(v.databaseUrl!);
      cleanups.push(() => proxy.close());
      const { socket, heard } = await notifyListener(v);
      const daemon = await startDaemon(v, {
        args: ['--interval', '1s'],
        env: {
          DATABASE_URL: proxy.url,
          NOTIFY_SOCKET: socket,
          WATCHDOG_USEC: '1000000',
          CREDVAULT_DB_TIMEOUT: '2',
        },
      });
      cleanups.push(() => daemon.stop());
      await untilStarted(daemon);
      const pings = () => heard().split('WATCHDOG=1').length - 1;
      proxy.down();
      const down = await healthUntil(daemon, (h) =>
        h.json<{ reasons: string[] }>().reasons.some((r) => r.startsWith('last sweep failed')),
      );
      expect(down.status).toBe(503);
      // Pings every half second (half of WATCHDOG_USEC) go on: the process is alive and its sweep
      // turns, failing; a restart would only fail to start (exit 8) while the database is down.
      const before = pings();
      await sleep(2500);
      expect(pings()).toBeGreaterThanOrEqual(before + 3);
      proxy.restore();
      const healthy = await healthUntil(daemon, (h) => h.status === 200);
      expect(healthy.status).toBe(200);
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'a sweep stuck on a locked table with no database limit (CREDVAULT_DB_TIMEOUT=0): /healthz says it is stalled, a warning is logged and WATCHDOG=1 stops; once the lock is gone it goes on and says so',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'acct-a');
      const { socket, heard } = await notifyListener(v);
      // A refresh's lease is then 11 s: the longest the sweep may go without progress.
      const daemon = await startDaemon(v, {
        args: ['--interval', '1s'],
        env: {
          NOTIFY_SOCKET: socket,
          WATCHDOG_USEC: '1000000',
          CREDVAULT_DB_TIMEOUT: '0',
          CREDVAULT_HTTP_TIMEOUT: '0.5',
        },
      });
      cleanups.push(() => daemon.stop());
      await untilStarted(daemon);
      const pings = () => heard().split('WATCHDOG=1').length - 1;
      const attempts = double.refreshAttempts;
      const release = await lockTokensTable(v);
      // Within 20 s of the lock (not the shared wait): said once the 11 s have passed, not at any time.
      const stalled = await healthUntil(
        daemon,
        (h) => h.json<{ reasons: string[] }>().reasons.some((r) => r.startsWith('sweep stalled: ')),
        20_000,
      );
      expect(stalled.status).toBe(503);
      expect(stalled.json<{ reasons: string[] }>().reasons).toContainEqual(
        expect.stringMatching(/^sweep stalled: no progress for \d+ s \(sweeping since /),
      );
      // Checked every second: logged within one.
      for (let i = 0; i < 20 && !daemon.logs().includes('refresh sweep stalled'); i++) await sleep(100);
      expect(daemon.logs()).toContain('refresh sweep stalled: no progress for');
      await sleep(700); // a ping already on its way
      const withheld = pings();
      await sleep(1500);
      expect(pings()).toBe(withheld);
      await release();
      const healthy = await healthUntil(daemon, (h) => h.status === 200 && double.refreshAttempts > attempts);
      expect(healthy.status).toBe(200);
      await until(() => daemon.logs().includes('progressing again'), { intervalMs: 100 });
      expect(daemon.logs()).toMatch(/refresh sweep progressing again after \d+ s stalled/);
      const resumed = pings();
      await sleep(1500);
      expect(pings()).toBeGreaterThan(resumed);
    },
  );

  // systemd's protocol, whatever database the daemon serves (a start that fails on the embedded
  // database is the test above).
  it.runIf(ONCE)('sends READY=1 and WATCHDOG=1 to NOTIFY_SOCKET', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const { socket, heard: heardNow } = await notifyListener(v);
    let heard = heardNow();
    const daemon = await startDaemon(v, { env: { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '1000000' } });
    cleanups.push(() => daemon.stop());
    await until(
      () => {
        heard = heardNow();
        return heard.includes('WATCHDOG=1');
      },
      { intervalMs: 50 },
    );
    expect(heard).toContain('READY=1');
    expect(heard).toContain(`MAINPID=${daemon.child.pid}`);
    expect(heard).toContain('WATCHDOG=1');
    expect(await daemon.stop()).toBe(0);
    await until(
      () => {
        heard = heardNow();
        return heard.includes('STOPPING=1');
      },
      { intervalMs: 50 },
    );
    expect(heard).toContain('STOPPING=1');
  });
});

void freePort;
