/**
 * What `credvault daemon` tells the person on call: its log lines (one per event, with the
 * connections, the reason, the count, the next attempt and what to do, as fields) and its metrics,
 * including while the database is down.
 */
import { writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateMasterKey } from '../../src/crypto/local-key.js';
import { client, microsoftVault, type RunningDaemon, startDaemon } from '../helpers/daemon.js';
import { startDbProxy } from '../helpers/db-proxy.js';
import { freePort } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

const setup = () => microsoftVault(cleanups);

// biome-ignore lint/suspicious/noExplicitAny: log lines are whatever JSON the daemon wrote
type Line = Record<string, any>;

/** The daemon's log as it wrote it: one JSON document per line (stderr is not a terminal here). */
function lines(daemon: RunningDaemon): Line[] {
  return daemon
    .logs()
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => {
      try {
        return JSON.parse(line) as Line;
      } catch {
        throw new Error(`a log line that is not JSON: ${line}`);
      }
    });
}

async function waitForLine(daemon: RunningDaemon, match: (line: Line) => boolean) {
  await until(
    () => {
      try {
        return lines(daemon).some(match);
      } catch {
        return false; // a line not all written yet; the assertion below says so if it stays
      }
    },
    { intervalMs: 100 },
  );
  expect(lines(daemon).some(match), daemon.logs()).toBe(true);
  return lines(daemon).filter(match);
}

/** The value of a metric's series in Prometheus text, or undefined when it is not there. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * SQL against the vault while its daemon runs (on the embedded database, TestVault goes through the
 * daemon's socket, as every credvault command then does). Answers the last statement's rows.
 */
async function sql(v: TestVault, ...statements: string[]): Promise<Array<Record<string, unknown>>> {
  let rows: Array<Record<string, unknown>> = [];
  await v.session(async (query) => {
    for (const text of statements) rows = await query(text);
  });
  return rows;
}

/** Makes the grants of these connections due for the sweep now, out of any cool-down. */
async function makeDue(v: TestVault, names: string[]) {
  await sql(
    v,
    `update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute',
       last_refreshed_at = now() - interval '1 hour', cooldown_until = null
     where id in (select token_id from ad_account_connections where name in (${names.map((n) => `'${n}'`).join(', ')}))`,
  );
}

describe('the log of refreshes', () => {
  it.runIf(ONCE)(
    'says which connection failed, why, how often, when it is tried again and what to do; entering error, needs_reauth and recovering once each',
    async () => {
      const { double, v, app, adopt } = await setup();
      const a = await adopt('987', 'acct-a');
      const b = await adopt('988', 'acct-b');
      const ids = Object.fromEntries(
        (await v.sql<{ name: string; id: string }>('select name, id from ad_account_connections')).map(
          (r) => [r.name, r.id],
        ),
      );
      // acct-a has failed once already; the platform answers 503 to every try of its next refresh.
      await v.sql("update ad_account_connections set consecutive_failures = 1 where name = 'acct-a'");
      await makeDue(v, ['acct-a']);
      double.faults.failNext(3, { status: 503, body: 'upstream unavailable' });
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());

      // A failure that leaves it active: one warning naming the connection, with its facts as fields.
      const [failed] = await waitForLine(daemon, (l) => l.event === 'refresh_failed');
      expect(failed).toMatchObject({
        level: 40,
        connections: ['acct-a'],
        connection_ids: [ids['acct-a']],
        platform: 'microsoft_ads',
        app: app.label,
        outcome: 'transient',
        http_status: 503,
        consecutive_failures: 2,
        status: 'active',
      });
      expect(failed!.reason).toContain('503');
      expect(Date.parse(failed!.next_attempt_after)).toBeGreaterThan(Date.now());
      expect(failed!.msg).toContain(
        'refresh of connection acct-a (microsoft_ads) failed (transient, 2 in a row',
      );
      expect(failed!.msg).toContain('it is tried again after');
      // The ref it gives is one `connections show` takes, and `status` shows the same reason.
      const shown = await v.json<{ id: string; consecutive_failures: number; status_message: string }>([
        'connections',
        'show',
        failed!.connections[0],
      ]);
      expect(shown).toMatchObject({ id: failed!.connection_ids[0], consecutive_failures: 2 });
      expect(shown.status_message).toBe(failed!.reason);

      /** The next line of `event` after the connection is made due and a SIGHUP starts a sweep. */
      const sweepFor = async (name: string, event: string) => {
        await makeDue(v, [name]);
        daemon.child.kill('SIGHUP');
        return (await waitForLine(daemon, (l) => l.event === event))[0];
      };

      // The third failure in a row: the connection enters error, said once, with what to do.
      double.faults.failNext(3, { status: 503, body: 'upstream unavailable' });
      const entered = await sweepFor('acct-a', 'connection_error');
      expect(entered).toMatchObject({
        level: 50,
        connections: ['acct-a'],
        outcome: 'transient',
        consecutive_failures: 3,
        status: 'error',
        previous_status: 'active',
      });
      expect(entered!.msg).toContain(
        'connection acct-a (microsoft_ads) is now in error: 3 refreshes failed in a row',
      );
      expect(entered!.action).toContain('credvault connections refresh acct-a --force');
      expect(entered!.action).toContain(`credvault connect microsoft_ads --app ${app.label} --account 987`);

      // A dead refresh token: needs_reauth, said once, with the command that connects it again.
      double.revokeGrant(b.refreshToken);
      const dead = await sweepFor('acct-b', 'needs_reauth');
      const reconnect = `credvault connect microsoft_ads --app ${app.label} --account 988`;
      expect(dead).toMatchObject({
        level: 50,
        connections: ['acct-b'],
        outcome: 'dead_grant',
        status: 'needs_reauth',
        previous_status: 'active',
        next_attempt_after: null,
        action: reconnect,
      });
      expect(dead!.msg).toContain(`connection acct-b (microsoft_ads) needs a person`);
      expect(dead!.msg).toContain(reconnect);

      // The platform works again: acct-a recovers, said once.
      const recovered = await sweepFor('acct-a', 'recovered');
      expect(recovered).toMatchObject({
        level: 30,
        connections: ['acct-a'],
        previous_status: 'error',
        status: 'active',
      });
      expect(recovered!.msg).toContain('refresh of connection acct-a (microsoft_ads) works again');

      // The app itself refused (invalid_client: a secret rotated at the platform), a third time in a
      // row: what to do is fix the app, not connect again (which would fail on the same secret).
      await v.sql("update ad_account_connections set consecutive_failures = 2 where name = 'acct-a'");
      double.faults.failNext(1, {
        status: 401,
        body: {
          error: 'invalid_client',
          error_description: 'AADSTS7000215: Invalid client secret provided.',
        },
      });
      await makeDue(v, ['acct-a']);
      daemon.child.kill('SIGHUP');
      const [appRefused] = await waitForLine(
        daemon,
        (l) => l.event === 'connection_error' && l.outcome === 'client',
      );
      expect(appRefused).toMatchObject({ status: 'error', previous_status: 'active' });
      expect(appRefused!.action).toBe(
        `credvault apps update ${app.label} --new-client-secret (the platform refused the app itself), then credvault connections refresh acct-a --force`,
      );

      expect(await daemon.stop()).toBe(0);
      const all = lines(daemon);
      for (const event of ['needs_reauth', 'recovered'])
        expect(all.filter((l) => l.event === event)).toHaveLength(1);
      // Once per entry into error: the transient one, then the app's.
      expect(all.filter((l) => l.event === 'connection_error')).toHaveLength(2);
      // No line names a grant without its connections any more, and none carries a token.
      expect(daemon.logs()).not.toContain('refresh of grant');
      await expectNoSecretsLeaked(
        v,
        [a.refreshToken, b.refreshToken, ...double.refreshTokens.keys(), ...double.accessTokens.keys()],
        [daemon.logs()],
      );
    },
  );
});

describe('the metrics', () => {
  it.runIf(ONCE)(
    'count audit failures under the route that failed, the sweeps, and say the build, the process and the platform of ending refresh tokens',
    async () => {
      const { double, v, adopt } = await setup();
      await adopt('987', 'acct-a');
      await adopt('988', 'acct-b');
      // Refresh tokens with an end within 14 days: acct-a's fixed (as LinkedIn's 365 days: a person
      // must connect again), acct-b's one that use moves (Microsoft's 90 idle days: the daemon's
      // keep-alive refresh renews it, so it is neither counted nor warned of).
      await v.sql(
        `update oauth_tokens_vault set refresh_token_expires_at = now() + interval '3 days',
           refresh_token_expiry_fixed = (id = (select token_id from ad_account_connections where name = 'acct-a'))`,
      );
      const reader = await client(v, ['reader', '--all']);
      const scraper = await client(v, ['scraper', '--all']);
      await client(v, ['idle', '--all']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
      expect((await daemon.get('/metrics', { token: scraper })).status).toBe(200);
      await sql(
        v,
        `create or replace function refuse_audit() returns trigger language plpgsql as $$
         begin raise exception 'audit is read-only' using errcode = '42501'; end $$`,
        'create trigger refuse_audit before insert on credential_access_audit for each row execute function refuse_audit()',
      );
      const refused = await daemon.get('/v1/connections/acct-a/token', { token: reader });
      expect(refused.status).toBe(503);
      for (const token of double.accessTokens.keys()) expect(refused.body).not.toContain(token);
      // /healthz says so (it answered 200 while no token could be served), and says when the log takes
      // records again without a token request in between (a load balancer sends none to a 503), having
      // written nothing itself.
      const rows = async () => (await sql(v, 'select count(*)::int as n from credential_access_audit'))[0]!.n;
      const before = await rows();
      const unhealthy = await daemon.get('/healthz');
      expect(unhealthy.status).toBe(503);
      expect(JSON.parse(unhealthy.body).reasons).toEqual([
        'the audit log refuses records (no token is served): audit is read-only',
      ]);
      await sql(v, 'drop trigger refuse_audit on credential_access_audit');
      const healthy = await daemon.get('/healthz');
      expect(healthy.status, healthy.body).toBe(200);
      expect(await rows()).toBe(before);
      expect((await v.cli(['audit', 'verify'])).code).toBe(0);

      const read = async () => (await daemon.get('/metrics', { token: reader })).body;
      await until(
        async () => (sample(await read(), 'credvault_sweep_last_success_timestamp_seconds') ?? 0) > 0,
        { intervalMs: 200 },
      );
      const text = await read();
      expect(sample(text, 'credvault_sweep_last_success_timestamp_seconds')).toBeGreaterThan(0);
      // The refused token: an audit failure, and a 503 of the token route (not of a route "error").
      expect(sample(text, 'credvault_audit_write_failures_total')).toBe(1);
      expect(sample(text, 'credvault_http_request_duration_seconds_count{route="token",status="503"}')).toBe(
        1,
      );
      expect(sample(text, 'credvault_http_request_duration_seconds_count{route="token",status="200"}')).toBe(
        1,
      );
      expect(text).not.toContain('route="error"');
      expect(sample(text, 'credvault_sweep_failures_total')).toBe(0);
      expect(sample(text, 'credvault_sweep_last_success_timestamp_seconds')).toBeLessThanOrEqual(
        Date.now() / 1000,
      );
      expect(text).toMatch(/^credvault_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m);
      expect(sample(text, 'credvault_refresh_tokens_ending_soon{platform="microsoft_ads"}')).toBe(1);
      expect(daemon.logs()).toMatch(/the refresh token of acct-a ends [^;]+; connect it again before then/);
      // Before: acct-b counted and warned of too ("connect it again"), though its next refresh renews it.
      expect(daemon.logs()).not.toContain('the refresh token of acct-b');
      expect(sample(text, 'credvault_database_gauges_updated_timestamp_seconds')).toBeGreaterThan(0);
      // The process's own, under their standard names.
      for (const name of [
        'process_open_fds',
        'process_resident_memory_bytes',
        'nodejs_eventloop_lag_seconds',
        'nodejs_heap_size_used_bytes',
      ])
        expect(text).toMatch(new RegExp(`^${name} `, 'm'));
      // Help texts say what they cover: every route, not "the token endpoint".
      expect(text).not.toContain('token endpoint');
      expect(text).toContain('# TYPE credvault_audit_write_failures_total counter');
      // The log says what failed, once.
      expect(daemon.logs()).toContain('"msg":"request failed: the database refused the operation');
      expect(lines(daemon).filter((l) => l.event === 'request_failed' && l.route === 'token')).toHaveLength(
        1,
      );

      // `clients list` says when each was last used, whatever the route: a metrics scraper too (only
      // the token route counted before: a scraper looked unused, and was a candidate for revoking).
      expect(await daemon.stop()).toBe(0);
      const listed = await v.json<Array<{ name: string; last_used_at: string | null }>>(['clients', 'list']);
      const used = Object.fromEntries(listed.map((c) => [c.name, c.last_used_at !== null]));
      expect(used).toEqual({ reader: true, scraper: true, idle: false });
    },
  );
});

describe.runIf(ONCE)('a start that fails', () => {
  it('is reported as a JSON line of the daemon’s log when that log is JSON lines', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const file = join(v.root, 'not-a-socket');
    writeFileSync(file, 'x');
    const cases: Array<{
      args: string[];
      env?: Record<string, string>;
      code: number;
      error: string;
      says: string;
    }> = [
      // Before the daemon opens anything, and after it logged that it starts (the key is checked then).
      {
        args: ['--listen', `unix:${file}`],
        code: 2,
        error: 'invalid_input',
        says: 'something that is not a socket',
      },
      {
        args: ['--listen', `127.0.0.1:${await freePort()}`],
        env: { CREDENTIAL_MASTER_KEY: generateMasterKey() },
        code: 6,
        error: 'key_error',
        says: 'does not match this vault',
      },
      { args: ['--no-such-flag'], code: 2, error: 'invalid_input', says: "unknown option '--no-such-flag'" },
    ];
    for (const c of cases) {
      const run = await v.cli(['daemon', ...c.args], { timeoutMs: 60_000, ...(c.env ? { env: c.env } : {}) });
      expect(run.code, run.stderr).toBe(c.code);
      const logged = run.stderr
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Line);
      expect(logged.at(-1)).toMatchObject({
        level: 60,
        event: 'start_failed',
        exit_code: c.code,
        error: { code: c.error, message: expect.stringContaining(c.says) },
        msg: expect.stringContaining(`credvault daemon could not start: `),
      });
      expect(logged.at(-1)!.msg).toContain(c.says);
      expect(typeof logged.at(-1)!.time).toBe('number');
    }
  });
});

// A database this test can take away: PostgreSQL behind a proxy (startDbProxy).
describe.runIf(DB_KIND === 'postgres')('while the database is unreachable', () => {
  it('logs a failing request once and then counts it, keeps /metrics for a client it verified, and a SIGHUP says the database failed, not the key', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'acct-a');
    const reader = await client(v, ['reader', '--all']);
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    // Sweeping every 5 s, so that sweeps fail meanwhile.
    const daemon = await startDaemon(v, {
      env: { DATABASE_URL: proxy.url },
      args: ['--interval', '5s'],
    });
    cleanups.push(() => daemon.stop());
    expect((await daemon.get('/v1/connections/acct-a/token', { token: reader })).status).toBe(200);
    expect((await daemon.get('/metrics', { token: reader })).status).toBe(200);
    const verifiedAt = Date.now();
    const unknown = `cvc_${'x'.repeat(43)}`;

    proxy.down();
    // 40 token requests: each refused (no token), one log line saying why.
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => daemon.get('/v1/connections/acct-a/token', { token: reader })),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(40).fill(503));
    const [first] = await waitForLine(daemon, (l) => l.event === 'request_failed' && l.route === 'token');
    expect(first).toMatchObject({
      level: 50,
      route: 'token',
      status: 503,
      cause: 'the database is unreachable',
      msg: expect.stringContaining('request failed: the database is unreachable'),
    });
    // Then lines with the count of the others: one, or one per window when the requests fail over more
    // than one (its LISTEN gone with the database, the daemon reads each request's client from the
    // database, and the requests queued for the pool's connections wait for its attempts to connect).
    const summaries = () => {
      try {
        return lines(daemon).filter(
          (l) => l.event === 'request_failed' && l.route === 'token' && l.repeated !== undefined,
        );
      } catch {
        return []; // a line not all written yet
      }
    };
    const counted = () => summaries().reduce((n, l) => n + (l.repeated as number), 0);
    await until(() => counted() >= 39, { intervalMs: 100 });
    expect(counted(), daemon.logs()).toBe(39);
    for (const summary of summaries()) {
      expect(summary).toMatchObject({ cause: 'the database is unreachable' });
      expect(summary.msg).toMatch(/\(\d+ more in the last \d+ s\)$/);
    }
    // The gauges read from the database: said once that they are stale; and the sweep fails.
    await waitForLine(daemon, (l) => l.event === 'gauges_stale');
    const [sweep] = await waitForLine(daemon, (l) => l.event === 'sweep_failed');
    expect(sweep!.msg).toContain('refresh sweep failed: the database is unreachable');

    // Past the 60 s for which a verified client is remembered: /metrics still answers that client
    // (nothing secret there), and only it; the token and connection routes fail closed.
    await new Promise((r) => setTimeout(r, Math.max(0, verifiedAt + 62_000 - Date.now())));
    const metrics = await daemon.get('/metrics', { token: reader });
    expect(metrics.status, metrics.body).toBe(200);
    // The 40 refused, each under its route and status (most before their audit record, not at it: with
    // its LISTEN gone along with the database, the daemon checks their client against the database);
    // and the daemon does not serve from memory.
    expect(
      sample(metrics.body, 'credvault_http_request_duration_seconds_count{route="token",status="503"}'),
    ).toBe(40);
    expect(sample(metrics.body, 'credvault_listening')).toBe(0);
    expect(sample(metrics.body, 'credvault_sweep_failures_total')).toBeGreaterThan(0);
    const updated = sample(metrics.body, 'credvault_database_gauges_updated_timestamp_seconds')!;
    expect(updated).toBeLessThan(verifiedAt / 1000 + 15);
    expect((await daemon.get('/metrics', { token: unknown })).status).toBe(503);
    expect((await daemon.get('/v1/connections', { token: reader })).status).toBe(503);
    for (const event of ['gauges_stale', 'sweep_failed'])
      expect(lines(daemon).filter((l) => l.event === event && l.repeated === undefined)).toHaveLength(1);

    // SIGHUP: the key cannot be checked because the database cannot be read; it is not a wrong key.
    daemon.child.kill('SIGHUP');
    const [reload] = await waitForLine(daemon, (l) => l.event === 'reload_failed');
    expect(reload).toMatchObject({ level: 50, reason: 'database' });
    expect(reload!.msg).toContain('SIGHUP: the key was not reloaded: the database is unreachable');
    expect(daemon.logs()).not.toContain('does not open this vault');
    // Each token request's failure is in the log once or in a count, never a line each.
    expect(
      lines(daemon).filter((l) => l.event === 'request_failed' && l.route === 'token').length,
    ).toBeLessThan(5);
  });
});

describe.runIf(ONCE)('a client that does not send the body it announced', () => {
  it('closing the connection, or stalling until the request timeout (408), is the client’s doing: no database outage in the log, the metrics or the audit log', async () => {
    const { v, adopt } = await setup();
    await adopt('987', 'ms-one');
    const operator = await client(v, ['op', '--all', '--role', 'operator']);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    /**
     * POST …/refresh announcing 100 bytes and sending `{` once the daemon asks for the body (100
     * Continue); then `close` ends the connection, or it waits for what the daemon answers.
     */
    const partial = (close: boolean) =>
      new Promise<string>((resolve, reject) => {
        const socket = createConnection({ path: daemon.listen.slice('unix:'.length) });
        let raw = '';
        socket.setEncoding('utf8');
        socket.on('connect', () =>
          socket.write(
            'POST /v1/integrations/microsoft_ads/connections/ms-one/refresh HTTP/1.1\r\nhost: localhost\r\n' +
              `authorization: Bearer ${operator}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n` +
              'expect: 100-continue\r\n\r\n',
          ),
        );
        socket.on('data', (chunk: string) => {
          raw += chunk;
          if (raw === 'HTTP/1.1 100 Continue\r\n\r\n') {
            socket.write('{');
            if (close) socket.destroy();
          }
        });
        socket.on('close', () => resolve(raw));
        socket.on('error', reject);
      });
    const metric = async (status: string) =>
      sample(
        (await daemon.get('/metrics', { token: operator })).body,
        `credvault_http_request_duration_seconds_count{route="connections.refresh",status="${status}"}`,
      );
    const audited = async () =>
      (
        await v.json<Array<{ action: string; outcome: string; detail: { status?: number } }>>([
          'audit',
          'list',
          '--action',
          'api.connections.refresh',
        ])
      ).map((row) => [row.outcome, row.detail.status]);

    expect(await partial(true)).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    // Counted as the client's leaving (499), once; before, as a 503 of the database.
    await until(async () => (await metric('499')) === 1 || (await metric('503')) !== undefined, {
      intervalMs: 100,
    });
    expect(await metric('503')).toBeUndefined();
    expect(await metric('499')).toBe(1);
    // The request timeout (15 s): the 408 it promises, counted as such.
    const stalled = await partial(false);
    expect(stalled).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 408 /);
    expect(stalled).toContain('"code":"request_timeout"');
    await until(async () => (await metric('408')) === 1, { intervalMs: 100 });
    expect(await metric('408')).toBe(1);
    expect(await metric('503')).toBeUndefined();
    expect(await audited()).toEqual([
      ['failure', 408],
      ['failure', 499],
    ]);
    // Before: a level-50 "request failed: the database is unreachable" line (error "aborted").
    expect(lines(daemon).filter((l) => l.level >= 50 || l.event === 'request_failed')).toEqual([]);
    expect(daemon.logs()).not.toContain('unreachable');
    expect((await daemon.get('/healthz')).status).toBe(200);
    // The connection is refreshed as ever by a request that sends its body.
    const done = await daemon.request('POST', '/v1/integrations/microsoft_ads/connections/ms-one/refresh', {
      token: operator,
      body: {},
    });
    expect(done.status, done.body).toBe(200);
  });
});
