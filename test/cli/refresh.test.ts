import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type GoogleDouble,
  MICROSOFT_ADS_SCOPE,
  type MicrosoftDouble,
  startGoogleDouble,
  startMicrosoftDouble,
  startRedditDouble,
} from '../doubles/index.js';
import { startDbProxy } from '../helpers/db-proxy.js';
import { addAppFor, addConnection, adoptGrant } from '../helpers/flows.js';
import { BIN } from '../helpers/paths.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { type CliResult, createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';
import { until, untilLockWaits } from '../helpers/wait.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f()));
});

async function vault(): Promise<TestVault> {
  const v = await createVault();
  cleanups.push(() => v.destroy());
  return v;
}

async function google(): Promise<GoogleDouble> {
  const d = await startGoogleDouble();
  cleanups.push(() => d.close());
  return d;
}

async function microsoft(options: { strictRotation?: boolean } = {}): Promise<MicrosoftDouble> {
  const d = await startMicrosoftDouble(options);
  cleanups.push(() => d.close());
  return d;
}

/**
 * A vault with one connection (Microsoft unless told), adopted from a grant the double issued, its
 * access token expired (unless `expired: false`); `stored` is then its refresh token as sealed.
 */
async function connected(
  double: MicrosoftDouble | GoogleDouble,
  platform: 'microsoft_ads' | 'google_ads' = 'microsoft_ads',
  options: { expired?: boolean } = {},
) {
  const v = await vault();
  const app = await addAppFor(v, platform, double as never);
  const account = platform === 'microsoft_ads' ? '987' : '1234567890';
  const grant = double.issueGrant({
    clientId: app.clientId,
    scope:
      platform === 'microsoft_ads'
        ? `${MICROSOFT_ADS_SCOPE} offline_access`
        : 'https://www.googleapis.com/auth/adwords',
  } as never);
  await adoptGrant(v, platform, app.label, grant.refreshToken, { accounts: [account], name: 'acct' });
  if (options.expired === false) return { v, app, grant, stored: null };
  const [row] = await v.sql<{ refresh_token_enc: string }>(
    "update oauth_tokens_vault set access_token_expires_at = now() - interval '1 minute' returning refresh_token_enc",
  );
  return { v, app, grant, stored: row!.refresh_token_enc };
}

async function refreshTokenCiphertext(v: TestVault): Promise<string> {
  const [row] = await v.sql<{ refresh_token_enc: string }>(
    'select refresh_token_enc from oauth_tokens_vault',
  );
  return row!.refresh_token_enc;
}

async function statusOf(v: TestVault) {
  const report = await v.json<{
    connections: Array<{
      status: string;
      urgency: string;
      problem: string | null;
      consecutive_failures: number;
    }>;
  }>(['status']);
  return report.connections[0]!;
}

/** On the embedded database the processes take turns; give them time to. */
const TURNS = DB_KIND === 'pglite' ? { CREDVAULT_LOCK_TIMEOUT: '300' } : {};

/**
 * How many processes race. On PostgreSQL they truly run at once; on the embedded database they take
 * turns behind its lock, one whole start each, so a few show all that many would (the first refreshes,
 * the rest find its token) at a fraction of the cost.
 */
const RACERS = DB_KIND === 'pglite' ? 5 : 20;

describe.each([
  { strictRotation: false, what: 'rotating refresh tokens' },
  { strictRotation: true, what: 'a platform that revokes the grant when a used refresh token comes back' },
])(`${RACERS} \`token get\` processes at once on an expired token ($what)`, ({ strictRotation }) => {
  it('make exactly one refresh request, and all print the same valid token', async () => {
    const double = await microsoft({ strictRotation });
    const { v, app, grant } = await connected(double);
    const before = double.refreshAttempts;
    double.faults.latencyMs = 300; // a slow platform widens the race
    const runs = await Promise.all(
      Array.from({ length: RACERS }, () =>
        v.cli(['token', 'get', 'acct'], { env: TURNS, secretOutput: true, timeoutMs: 300_000 }),
      ),
    );
    expect(runs.map((r) => r.code)).toEqual(Array(RACERS).fill(0));
    expect(double.refreshAttempts - before).toBe(1);
    const tokens = new Set(runs.map((r) => r.stdout.trim()));
    expect(tokens.size).toBe(1);
    const [token] = [...tokens];
    expect(double.accessTokens.get(token!)?.revoked).toBe(false);
    // The rotated refresh token was stored: the next refresh is accepted even where reuse is fatal.
    expect((await v.cli(['connections', 'refresh', 'acct'])).code).toBe(0);
    expect(double.refreshAttempts - before).toBe(2);
    const audit = await v.json<Array<{ action: string }>>(['audit', 'list', '--limit', '100']);
    // connections refresh hands out no token: its request is on record as such, not as a token served.
    expect(audit.filter((a) => a.action === 'token.serve')).toHaveLength(RACERS);
    expect(audit.filter((a) => a.action === 'connection.refresh')).toHaveLength(1);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret, ...double.refreshTokens.keys()]);
  });
});

describe('a --min-ttl longer than the platform gives', () => {
  // Parsing the flag (the database only keeps the refresh every other test makes): once.
  it.runIf(ONCE)('may be a week (LinkedIn tokens live 60 days), and not beyond a year', async () => {
    const double = await google();
    const { v } = await connected(double, 'google_ads');
    const week = await v.cli(['token', 'get', 'acct', '--min-ttl', '604800'], { secretOutput: true });
    expect(week.code, week.stderr).toBe(0);
    const tooLong = await v.cli(['token', 'get', 'acct', '--min-ttl', '31536001']);
    expect(tooLong.code).toBe(2);
    expect(tooLong.stderr).toContain('--min-ttl must be whole seconds from 0 to 31536000');
  });

  it.runIf(ONCE)(
    'nor does one just short of the token’s life: a token refreshed within the last minute meets it',
    async () => {
      const double = await google();
      const { v } = await connected(double, 'google_ads', { expired: false });
      // Refreshed 10 s ago, living 3599 s as Google's do: 3589 s left.
      await v.sql(
        "update oauth_tokens_vault set last_refreshed_at = now() - interval '10 seconds', access_token_expires_at = now() + interval '3589 seconds'",
      );
      const before = double.refreshAttempts;
      // Before, 3595 s was taken as asked: a refresh now, and again every few seconds after (one caller
      // asking every second made the platform rotate its tokens all day).
      for (const minTtl of ['3595', '3590', '3560']) {
        const got = await v.cli(['token', 'get', 'acct', '--min-ttl', minTtl], { secretOutput: true });
        expect(got.code, got.stderr).toBe(0);
      }
      expect(double.refreshAttempts - before).toBe(0);
      // A token refreshed over a minute ago does not: a refresh, once.
      await v.sql(
        "update oauth_tokens_vault set last_refreshed_at = now() - interval '100 seconds', access_token_expires_at = now() + interval '3499 seconds'",
      );
      for (let i = 0; i < 2; i++) {
        const got = await v.cli(['token', 'get', 'acct', '--min-ttl', '3590'], { secretOutput: true });
        expect(got.code, got.stderr).toBe(0);
      }
      expect(double.refreshAttempts - before).toBe(1);
    },
  );

  it('is met by the newest token: one refresh for callers at once, and one caller says it refreshed', async () => {
    const double = await google();
    const { v } = await connected(double, 'google_ads');
    const before = double.refreshAttempts;
    double.faults.latencyMs = 300;
    // Google's access tokens live 3599 s: no refresh can meet 3601. Fewer callers on the embedded
    // database, where they take turns (see RACERS).
    const callers = DB_KIND === 'pglite' ? 4 : 8;
    const runs = await Promise.all(
      Array.from({ length: callers }, () =>
        v.cli(['token', 'get', 'acct', '--min-ttl', '3601'], {
          env: TURNS,
          secretOutput: true,
          timeoutMs: 300_000,
        }),
      ),
    );
    expect(runs.map((r) => r.code)).toEqual(Array(callers).fill(0));
    expect(double.refreshAttempts - before).toBe(1);
    expect(new Set(runs.map((r) => r.stdout.trim())).size).toBe(1);
    const served = await v.sql<{ refreshed: boolean }>(
      "select (detail->>'refreshed')::boolean as refreshed from credential_access_audit where action = 'token.serve'",
    );
    expect(served).toHaveLength(callers);
    expect(served.filter((row) => row.refreshed)).toHaveLength(1);
  });
});

// PostgreSQL's clock is the server's; the embedded database's is its process's own (and every process
// that opens it runs on the same host, with the same clock).
describe.runIf(DB_KIND === 'postgres')('a host whose clock is off', () => {
  it('records a cool-down by the database clock, and another host honours it as recorded', async () => {
    const double = await microsoft();
    const { v } = await connected(double);
    // This process's clock runs two hours ahead (as a host's can).
    const ahead = join(v.root, 'ahead.cjs');
    writeFileSync(ahead, 'const real = Date.now; Date.now = () => real() + 2 * 3600 * 1000;\n');
    double.faults.failNext(20, { status: 503, body: 'down' });
    const skewed = await v.cli(['token', 'get', 'acct'], {
      env: { NODE_OPTIONS: `--require ${ahead}`, CREDVAULT_HTTP_TIMEOUT: '2' },
    });
    expect(skewed.code, skewed.stderr).toBe(5);
    const [row] = await v.sql<{ left: number }>(
      'select extract(epoch from cooldown_until - now())::float8 as left from oauth_tokens_vault',
    );
    // A first failure cools down for seconds, not for the two hours of the host's error.
    expect(row!.left).toBeGreaterThan(0);
    expect(row!.left).toBeLessThan(600);
    const calls = double.refreshAttempts;
    const waiting = await v.cli(['token', 'get', 'acct']);
    expect(waiting.code, waiting.stderr).toBe(5);
    expect(Number(/Wait (\d+)s/.exec(waiting.stderr)?.[1])).toBeLessThan(600);
    expect(double.refreshAttempts).toBe(calls);
  });
});

describe('failures', () => {
  it.runIf(ONCE)(
    'invalid_grant marks needs_reauth at once (exit 4) and the platform is not called again',
    async () => {
      const double = await microsoft();
      const { v, grant } = await connected(double);
      double.revokeGrant(grant.refreshToken);
      const result = await v.cli(['token', 'get', 'acct']);
      expect(result.code).toBe(4);
      expect(result.stderr).toContain('invalid_grant');
      expect(result.stderr).toContain('credvault connect');
      const attempts = double.refreshAttempts;
      const status = await statusOf(v);
      expect(status).toMatchObject({ status: 'needs_reauth', urgency: 'critical' });
      // A script reading --json sees the contract's code.
      const json = await v.cli(['token', 'get', 'acct', '--json']);
      expect(json.code).toBe(4);
      expect(JSON.parse(json.stderr).error.code).toBe('reauth_required');
      expect((await v.cli(['connections', 'refresh', 'acct', '--force'])).code).toBe(4);
      expect(double.refreshAttempts).toBe(attempts);
      // Each request is in the audit log, refused: the first after its failed refresh, the next two
      // from the recorded state without a platform call.
      const audit = await v.json<Array<{ action: string; outcome: string; detail: Record<string, unknown> }>>(
        ['audit', 'list', '--connection', 'acct', '--limit', '10'],
      );
      expect(audit.slice(0, 3).map((r) => [r.action, r.outcome, r.detail.purpose, r.detail.error])).toEqual([
        ['token.serve', 'failure', 'connections refresh', 'reauth_required'],
        ['token.serve', 'failure', 'token get --format json', 'reauth_required'],
        ['token.serve', 'failure', 'token get --format raw', 'reauth_required'],
      ]);
      expect(audit.map((r) => `${r.action} ${r.outcome}`)).toContain('token.refresh failure');
      // With the audit log read-only the refusal is still the answer: what to do, not the log's error.
      await v.refuseAuditWrites();
      const refused = await v.cli(['token', 'get', 'acct']);
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('credvault connect');
      // The tables a person reads name the account by the platform's id too.
      for (const table of [['status'], ['connections', 'list']])
        expect((await v.cli(table)).stdout).toMatch(/ Acme Search US \(987\) /);
    },
  );

  it.runIf(ONCE)('three timeouts in a row mark the connection error; the refresh token is kept', async () => {
    const double = await microsoft();
    const { v, stored } = await connected(double);
    const env = { CREDVAULT_HTTP_TIMEOUT: '0.5' };
    double.faults.hangNext(100);
    const results: CliResult[] = [];
    for (let i = 0; i < 3; i++)
      results.push(await v.cli(['connections', 'refresh', 'acct', '--force'], { env }));
    expect(results.map((r) => r.code)).toEqual([5, 5, 5]);
    expect(results[0]!.stderr).toContain('timed out');
    expect(await statusOf(v)).toMatchObject({
      status: 'error',
      consecutive_failures: 3,
      urgency: 'critical',
    });
    // The refresh token is kept; and the connection is refused (exit 4, cli.md) even while its access
    // token has time left.
    await v.sql("update oauth_tokens_vault set access_token_expires_at = now() + interval '50 minutes'");
    const blocked = await v.cli(['token', 'get', 'acct'], { env });
    expect(blocked.code).toBe(4);
    expect(blocked.stderr).toContain('failed to refresh 3 times in a row');
    expect(await refreshTokenCiphertext(v)).toBe(stored);
    expect(blocked.stderr).toContain('it is tried again after');
    double.faults.reset();
    const recovered = await v.cli(['connections', 'refresh', 'acct', '--force'], { env });
    expect(recovered.code, recovered.stderr).toBe(0);
    expect(await statusOf(v)).toMatchObject({ status: 'active', consecutive_failures: 0, urgency: 'ok' });
  });

  it.runIf(ONCE)(
    'a connection in error is tried again by token get once its cool-down is over, and is active again when that works',
    async () => {
      const double = await microsoft();
      const { v } = await connected(double);
      double.faults.failNext(9, { status: 503, body: 'upstream unavailable' });
      for (let i = 0; i < 3; i++) {
        await v.sql('update oauth_tokens_vault set cooldown_until = null');
        expect((await v.cli(['token', 'get', 'acct'])).code).toBe(5);
      }
      expect(await statusOf(v)).toMatchObject({ status: 'error', consecutive_failures: 3 });
      // The platform is back, and the cool-down over: no person needed.
      double.faults.reset();
      await v.sql("update oauth_tokens_vault set cooldown_until = now() - interval '1 second'");
      const attempts = double.refreshAttempts;
      const served = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(served.code, served.stderr).toBe(0);
      expect(double.refreshAttempts).toBe(attempts + 1);
      expect(await statusOf(v)).toMatchObject({ status: 'active', consecutive_failures: 0, urgency: 'ok' });
    },
  );

  it.skipIf(DB_KIND !== 'postgres')(
    'the platform call gives up before the lease it holds lapses, and the lease is given back',
    async () => {
      const double = await microsoft();
      const { v } = await connected(double);
      double.faults.hangNext(100);
      const child = v.spawn(['connections', 'refresh', 'acct', '--force'], {
        env: { CREDVAULT_HTTP_TIMEOUT: '1' },
      });
      child.stdin!.end();
      const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
      // One connection watches it all (a statement each time, so each sees what was committed).
      await v.session(async (query) => {
        // While the platform holds the request: the lease runs well past the platform call's deadline.
        let leaseLeftMs = 0;
        let seenAt = 0;
        await until(
          async () => {
            const [row] = await query<{ left_ms: number | null }>(
              'select (extract(epoch from lease_expires_at - now()) * 1000)::int as left_ms from oauth_tokens_vault where lease_owner is not null',
            );
            leaseLeftMs = row?.left_ms ?? 0;
            seenAt = Date.now();
            return leaseLeftMs !== 0;
          },
          { intervalMs: 10 },
        );
        expect(leaseLeftMs).toBeGreaterThan(5_000);
        expect(await exited).toBe(5);
        // Given up at the deadline (1 s a try), before the lease would lapse; and the lease is released.
        expect(Date.now() - seenAt).toBeLessThan(leaseLeftMs);
        const [row] = await query<{ lease_owner: string | null }>(
          'select lease_owner from oauth_tokens_vault',
        );
        expect(row!.lease_owner).toBeNull();
      });
    },
  );

  // The platform's protocol (the database only keeps the refresh): once.
  it.runIf(ONCE)('honours Retry-After: 2 on a 429 and then succeeds', async () => {
    const double = await microsoft();
    const { v } = await connected(double);
    const before = double.tokenRequests('refresh_token').length;
    double.faults.failNext(1, {
      status: 429,
      body: { error: 'temporarily_unavailable', error_description: 'slow down' },
      headers: { 'retry-after': '2' },
    });
    const result = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
    expect(result.code, result.stderr).toBe(0);
    const requests = double.tokenRequests('refresh_token').slice(before);
    expect(requests).toHaveLength(2);
    expect(requests[1]!.at - requests[0]!.at).toBeGreaterThanOrEqual(2000);
  });

  it('a platform error that echoes the refresh token, the client secret and a token credvault never had: none reaches any output, the stored status or the audit log', async () => {
    const double = await microsoft();
    const { v, app, grant } = await connected(double);
    // A secret of the platform's own, shorter than a refresh token: only its shape says what it is.
    const unknown = 'sk_live_abcdefghijklmnop123456';
    const echo = (error: string) => ({
      error,
      error_description: `refresh token ${grant.refreshToken} presented by ${app.clientId} with secret ${app.clientSecret} (key ${unknown})`,
    });
    double.faults.failNext(5, { status: 503, body: echo('temporarily_unavailable') });
    const transient = await v.cli(['connections', 'refresh', 'acct', '--force', '--json']);
    expect(transient.code).toBe(5);
    double.faults.reset();
    double.faults.failNext(1, { status: 400, body: echo('invalid_grant') });
    const dead = await v.cli(['connections', 'refresh', 'acct', '--force']);
    expect(dead.code).toBe(4);
    expect(dead.stderr).toContain('invalid_grant');
    expect(dead.stderr).toContain('[redacted]');
    for (const look of [
      ['status'],
      ['status', '--json'],
      ['connections', 'show', 'acct', '--json'],
      ['audit', 'list', '--json'],
    ]) {
      const run = await v.cli(look);
      expect(run.code, `${look.join(' ')}: ${run.stderr}`).toBe(0);
    }
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret!, unknown]);
  });

  // Each secret is sealed with its row and column as associated data: the cipher's doing, whatever
  // database holds the bytes (every test on both opens secrets it stored). Once.
  it.runIf(ONCE)(
    'a stored secret copied to another row or column does not decrypt: exit 6 naming where it sits, nothing sent',
    async () => {
      const double = await microsoft();
      const { v, app } = await connected(double);
      await addAppFor(v, 'microsoft_ads', double as never, { label: 'other-app' });
      const attempts = double.refreshAttempts;
      // Another app's client secret, copied over this app's (same key, same form; another row).
      const saved = await v.session(async (query) => {
        const [row] = await query<{ client_secret_enc: string }>(
          'select client_secret_enc from oauth_app_credentials where label = $1',
          [app.label],
        );
        await query(
          `update oauth_app_credentials set client_secret_enc = (select client_secret_enc from oauth_app_credentials where label = 'other-app')
         where label = $1`,
          [app.label],
        );
        return row!.client_secret_enc;
      });
      const copiedRow = await v.cli(['token', 'get', 'acct']);
      expect(copiedRow.code).toBe(6);
      expect(copiedRow.stderr).toContain('oauth_app_credentials.client_secret_enc');
      expect(copiedRow.stderr).toContain('it was altered or copied from elsewhere');
      // The app's own secret back; and the grant's access token, copied over its refresh token (same
      // row, another column).
      await v.session(async (query) => {
        await query('update oauth_app_credentials set client_secret_enc = $1 where label = $2', [
          saved,
          app.label,
        ]);
        await query('update oauth_tokens_vault set refresh_token_enc = access_token_enc');
      });
      const copiedColumn = await v.cli(['token', 'get', 'acct']);
      expect(copiedColumn.code).toBe(6);
      expect(copiedColumn.stderr).toContain('oauth_tokens_vault.refresh_token_enc');
      expect(double.refreshAttempts).toBe(attempts);
    },
  );

  it.runIf(ONCE)(
    'a platform that cannot be reached (connection refused) leaves no refresh in doubt: status says it cools down, not that an answer was lost',
    async () => {
      const double = await microsoft();
      const { v, stored } = await connected(double);
      await double.close();
      const failed = await v.cli(['token', 'get', 'acct']);
      expect(failed.code).toBe(5);
      expect(failed.stderr).toContain('ECONNREFUSED');
      expect(await refreshTokenCiphertext(v)).toBe(stored);
      const status = await statusOf(v);
      expect(status).toMatchObject({ status: 'active', urgency: 'warning', consecutive_failures: 1 });
      expect(status.problem).toContain('ECONNREFUSED');
      expect(status.problem).not.toContain('never recorded its answer');
      const [grant] = await v.sql<{ refresh_in_flight_since: Date | null }>(
        'select refresh_in_flight_since from oauth_tokens_vault',
      );
      expect(grant!.refresh_in_flight_since).toBeNull();
    },
  );

  it.runIf(ONCE)(
    'transient failures keep the refresh token, cool down, and answer from the recorded failure',
    async () => {
      const double = await microsoft();
      const { v, stored } = await connected(double);
      double.faults.failNext(3, { status: 503, body: 'upstream unavailable' });
      const failed = await v.cli(['token', 'get', 'acct']);
      expect(failed.code).toBe(5);
      expect(failed.stderr).toContain('HTTP 503');
      expect(await refreshTokenCiphertext(v)).toBe(stored);
      const attempts = double.refreshAttempts;
      const cooling = await v.cli(['token', 'get', 'acct']);
      expect(cooling.code).toBe(5);
      expect(cooling.stderr).toContain('not calling the platform again before');
      expect(cooling.stderr).toContain('--force');
      expect(double.refreshAttempts).toBe(attempts);
      expect(await statusOf(v)).toMatchObject({
        status: 'active',
        consecutive_failures: 1,
        urgency: 'warning',
      });
      const forced = await v.cli(['connections', 'refresh', 'acct', '--force']);
      expect(forced.code, forced.stderr).toBe(0);
      expect(double.refreshAttempts).toBe(attempts + 1);
      // The connection's own audit trail holds its refreshes, the failed one and the one that worked.
      const trail = await v.json<Array<{ action: string; outcome: string }>>([
        'audit',
        'list',
        '--connection',
        'acct',
      ]);
      const refreshes = trail.filter((r) => r.action === 'token.refresh').map((r) => r.outcome);
      expect(refreshes).toEqual(expect.arrayContaining(['success', 'failure']));
    },
  );
});

// The refresher's own state against another session's: PostgreSQL, where sessions truly run beside
// each other. Microsoft kills the grant when a used refresh token comes back (strictRotation): a
// refresh token sent twice, or a rotated one lost, shows as a refused refresh.
describe.runIf(DB_KIND === 'postgres')('a refresher that stalls or loses its write', () => {
  it('sends nothing once its lease is no longer its own (it stalled after taking it), and refreshes under a new one', async () => {
    const double = await microsoft({ strictRotation: true });
    const { v } = await connected(double);
    const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
    const asked = double.refreshAttempts;
    let handedOver = 0;
    try {
      // The apps table locked: token get takes its lease, then waits to read its app (a stall).
      const reserved = await other.reserve();
      await reserved`begin`;
      await reserved`lock table oauth_app_credentials in access exclusive mode`;
      const getting = v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(await until(async () => (await untilLockWaits(other, 1, { timeoutMs: 200 })) >= 1)).toBe(true);
      const [leased] = await other<
        { lease_owner: string | null }[]
      >`select lease_owner from oauth_tokens_vault`;
      expect(leased!.lease_owner).toMatch(/:\d+:/);
      // Meanwhile its lease lapsed and another refresher took the grant (for 3 s).
      await other`update oauth_tokens_vault set lease_owner = 'another-host:1:x', lease_expires_at = now() + interval '3 seconds'`;
      handedOver = Date.now();
      await reserved`commit`;
      reserved.release();
      const result = await getting;
      expect(result.code, result.stderr).toBe(0);
    } finally {
      await other.end();
    }
    // One refresh, sent only once the other's lease had lapsed (before, it was sent at once, under
    // the lease it had lost, and its answer could not be written: exit 5).
    const sent = double.tokenRequests('refresh_token');
    expect(sent.length - asked).toBe(1);
    expect(sent.at(-1)!.at - handedOver).toBeGreaterThan(2_500);
    expect((await v.cli(['connections', 'refresh', 'acct', '--force'])).code).toBe(0);
    expect(await statusOf(v)).toMatchObject({ status: 'active' });
  });

  it('serves nothing once a revocation committed while it was between its read and its serve', async () => {
    const double = await microsoft();
    const { v } = await connected(double, 'microsoft_ads', { expired: false });
    const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
    try {
      // The audit log's head held: token get has read its grant and waits to record the serve.
      const reserved = await other.reserve();
      await reserved`begin`;
      await reserved`select last_id from audit_head for update`;
      const getting = v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(await untilLockWaits(other)).toBeGreaterThanOrEqual(1);
      // Meanwhile the connection is revoked (as connections revoke leaves it) and that commits.
      await reserved`update ad_account_connections set status = 'revoked'`;
      await reserved`delete from oauth_tokens_vault`;
      await reserved`commit`;
      reserved.release();
      const result = await getting;
      // Before, exit 0 and the token printed after the revocation had returned.
      expect(result.code, result.stderr).toBe(4);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain('was revoked meanwhile');
    } finally {
      await other.end();
    }
    expect(
      await v.sql(
        "select 1 from credential_access_audit where action = 'token.serve' and outcome = 'success'",
      ),
    ).toEqual([]);
  });

  it('a refresh out at the platform while the connection is revoked serves nothing, and its record says revoked', async () => {
    const double = await microsoft();
    const { v } = await connected(double);
    double.faults.latencyMs = 1_500;
    const asked = double.refreshAttempts;
    try {
      const getting = v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(await until(() => double.refreshAttempts > asked, { intervalMs: 20 })).toBe(true);
      const revoked = await v.cli(['connections', 'revoke', 'acct']);
      expect(revoked.code, revoked.stderr).toBe(0);
      const result = await getting;
      expect(result.code, result.stderr).toBe(4);
      expect(result.stdout).toBe('');
    } finally {
      double.faults.latencyMs = 0;
    }
    const [refresh] = await v.sql<{ outcome: string; detail: { problem?: string } }>(
      "select outcome, detail from credential_access_audit where action = 'token.refresh' order by id desc limit 1",
    );
    // Before, 'the grant changed while this refresh was out (another refresher, or a re-encryption…)'.
    expect(refresh).toMatchObject({
      outcome: 'failure',
      detail: { problem: expect.stringContaining('the grant was revoked (or replaced by a reconnect)') },
    });
  });

  it('a refresh that works while a revocation is requested leaves the connection unserved, however it had failed before', async () => {
    const double = await google();
    const { v } = await connected(double, 'google_ads');
    // A connection that had failed: a refresh that works makes it healthy again (cli.md: status).
    await v.sql(
      "update ad_account_connections set status = 'error', status_message = 'three timeouts', consecutive_failures = 3",
    );
    double.faults.latencyMs = 3_000;
    const asked = double.refreshAttempts;
    try {
      const getting = v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(await until(() => double.refreshAttempts > asked, { intervalMs: 20 })).toBe(true);
      // While the refresh is out, the operator revokes and Google cannot be told: no longer served.
      double.faults.failNext(3, { status: 503, path: '/revoke', headers: { 'retry-after': '0' } });
      const refused = await v.cli(['connections', 'revoke', 'acct']);
      expect(refused.code, refused.stderr).toBe(5);
      expect(double.refreshAttempts - asked, 'the refresh was answered before the revocation').toBe(1);
      const result = await getting;
      // Before, exit 0 with the token, and the connection active again: the revocation undone.
      expect(result.code, result.stderr).toBe(4);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain('revocation requested');
    } finally {
      double.faults.latencyMs = 0;
    }
    expect(await statusOf(v)).toMatchObject({ status: 'needs_reauth' });
    expect((await v.cli(['token', 'get', 'acct'], { secretOutput: true })).code).toBe(4);
    // The refreshed tokens were kept, to revoke with once Google answers.
    const revoked = await v.cli(['connections', 'revoke', 'acct']);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(double.faults.pending.failures).toBe(0);
  });

  it('writes the rotated token again when the write is lost with its connection', async () => {
    const double = await microsoft({ strictRotation: true });
    const { v } = await connected(double);
    const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
    double.faults.latencyMs = 1_500;
    const asked = double.refreshAttempts;
    try {
      const getting = v.cli(['token', 'get', 'acct'], { secretOutput: true });
      // While the platform answers, the grant's row is locked: the write waits behind it, and its
      // session is then terminated (a failover, a proxy cutting connections).
      expect(await until(() => double.refreshAttempts > asked, { intervalMs: 20 })).toBe(true);
      const reserved = await other.reserve();
      await reserved`begin`;
      await reserved`select id from oauth_tokens_vault for update`;
      expect(await untilLockWaits(other)).toBeGreaterThanOrEqual(1);
      await other`select pg_terminate_backend(pid) from pg_stat_activity
        where wait_event_type = 'Lock' and datname = current_database() and pid <> pg_backend_pid()`;
      await reserved`rollback`;
      reserved.release();
      const result = await getting;
      // Before, exit 8 with the rotated token lost: the next refresh presented the used one.
      expect(result.code, result.stderr).toBe(0);
    } finally {
      double.faults.latencyMs = 0;
      await other.end();
    }
    const [row] = await v.sql<{ version: number; refresh_token_in_flight: boolean }>(
      'select version, refresh_in_flight_since is not null as refresh_token_in_flight from oauth_tokens_vault',
    );
    expect(row).toMatchObject({ version: 2, refresh_token_in_flight: false });
    const again = await v.cli(['connections', 'refresh', 'acct', '--force']);
    expect(again.code, again.stderr).toBe(0);
    expect(await statusOf(v)).toMatchObject({ status: 'active' });
  });
});

describe.runIf(DB_KIND === 'postgres')('a database outage while the platform answers', () => {
  it('keeps the rotated refresh token until the database is back, and stores it then', async () => {
    const double = await microsoft({ strictRotation: true });
    const { v } = await connected(double);
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    double.faults.latencyMs = 1_500;
    const asked = double.refreshAttempts;
    try {
      const getting = v.cli(['token', 'get', 'acct'], {
        secretOutput: true,
        env: { DATABASE_URL: proxy.url },
        timeoutMs: 120_000,
      });
      expect(await until(() => double.refreshAttempts > asked, { intervalMs: 20 })).toBe(true);
      // PostgreSQL restarting (with crash recovery, or a failover) for longer than the few seconds a
      // write was tried before: every connection closed and refused.
      proxy.down();
      await new Promise((r) => setTimeout(r, 6_000));
      proxy.restore();
      const result = await getting;
      // Before, exit 8 after about 4 s with the rotated token lost: the next refresh ended the grant.
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout.trim()).not.toBe('');
    } finally {
      double.faults.latencyMs = 0;
    }
    const [row] = await v.sql<{ version: number; in_flight: boolean }>(
      'select version, refresh_in_flight_since is not null as in_flight from oauth_tokens_vault',
    );
    expect(row).toMatchObject({ version: 2, in_flight: false });
    const again = await v.cli(['connections', 'refresh', 'acct', '--force']);
    expect(again.code, again.stderr).toBe(0);
    expect(await statusOf(v)).toMatchObject({ status: 'active' });
  });

  it('connections revoke whose local step fails after the platform revoked says what is done, and a second run finishes it', async () => {
    const double = await google();
    const { v } = await connected(double, 'google_ads', { expired: false });
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    double.faults.latencyPath = '/revoke';
    double.faults.latencyMs = 1_500;
    const asked = double.requests.length;
    let revoking: Promise<CliResult>;
    try {
      revoking = v.cli(['connections', 'revoke', 'acct'], { env: { DATABASE_URL: proxy.url } });
      expect(
        await until(() => double.requests.slice(asked).some((r) => r.path.startsWith('/revoke')), {
          intervalMs: 20,
        }),
      ).toBe(true);
      proxy.down();
      const first = await revoking;
      expect(first.code, first.stderr).toBe(8);
      // Before, only "cannot reach the database": nothing said the platform had revoked already.
      expect(first.stderr).toContain(
        'Google Ads has already revoked the grant of acct, which is not yet destroyed here',
      );
      expect(first.stderr).toContain(
        'Run `credvault connections revoke acct` again once the database answers',
      );
    } finally {
      double.faults.latencyMs = 0;
      proxy.restore();
    }
    const again = await v.cli(['connections', 'revoke', 'acct']);
    expect(again.code, again.stderr).toBe(0);
    expect(await v.sql('select id from oauth_tokens_vault')).toEqual([]);
  });

  it('connections add keeps the token the platform rotated the given one into, and stores the connection', async () => {
    const double = await microsoft({ strictRotation: true });
    const v = await vault();
    const app = await addAppFor(v, 'microsoft_ads', double as never);
    const grant = double.issueGrant({
      clientId: app.clientId,
      scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
    } as never);
    const proxy = await startDbProxy(v.databaseUrl!);
    cleanups.push(() => proxy.close());
    double.faults.latencyMs = 1_500;
    const asked = double.refreshAttempts;
    try {
      const adding = v.cli(
        [
          ...['connections', 'add', 'microsoft_ads', '--app', app.label, '--account', '987'],
          ...['--name', 'acct', '--refresh-token-file', '-'],
        ],
        { input: grant.refreshToken, env: { DATABASE_URL: proxy.url }, timeoutMs: 120_000 },
      );
      expect(await until(() => double.refreshAttempts > asked, { intervalMs: 20 })).toBe(true);
      proxy.down();
      await new Promise((r) => setTimeout(r, 3_000));
      proxy.restore();
      const added = await adding;
      // Before, exit 8 at once (its audit record could not be written, and the answer went with it),
      // and adding the token again, as the message said, ended the grant at the platform (exit 4).
      expect(added.code, added.stderr).toBe(0);
    } finally {
      double.faults.latencyMs = 0;
    }
    expect(await statusOf(v)).toMatchObject({ status: 'active' });
    const refreshed = await v.cli(['connections', 'refresh', 'acct', '--force']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    const audit = await v.sql<{ action: string; outcome: string }>(
      "select action, outcome from credential_access_audit where action = 'token.adopt'",
    );
    expect(audit).toEqual([{ action: 'token.adopt', outcome: 'success' }]);
  });
});

describe('a refresh whose answer is lost after the platform rotated the token', () => {
  // How the platform answers the retry (the database only keeps the state the tests of failures on
  // both record too): once. A process killed mid-refresh, what it left committed, is tried on both.
  it.runIf(ONCE)(
    'on a platform that tolerates the old token: the retry succeeds and nothing is wrong',
    async () => {
      const double = await microsoft({ strictRotation: false });
      const { v } = await connected(double);
      double.faults.dropAfterRotate(1);
      const result = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
      expect(result.code, result.stderr).toBe(0);
      expect(await statusOf(v)).toMatchObject({ status: 'active', urgency: 'ok' });
    },
  );

  it.runIf(ONCE)(
    'on a platform that kills the grant on reuse: needs_reauth, and status says why',
    async () => {
      const double = await microsoft({ strictRotation: true });
      const { v } = await connected(double);
      double.faults.dropAfterRotate(1);
      const result = await v.cli(['token', 'get', 'acct']);
      expect(result.code).toBe(4);
      const status = await statusOf(v);
      expect(status).toMatchObject({ status: 'needs_reauth', urgency: 'critical' });
      expect(status.problem).toContain('got no answer: the platform probably rotated the refresh token then');
    },
  );

  // Reddit answers an unknown or revoked refresh token with HTTP 400 and `{"error": 400}`, no OAuth
  // error code (see test/doubles/reddit.ts); before, that was taken for a malformed request.
  it('a revoked Reddit grant marks needs_reauth at once (exit 4)', async () => {
    const double = await startRedditDouble();
    cleanups.push(() => double.close());
    const v = await vault();
    const app = await addAppFor(v, 'reddit_ads', double as never);
    const grant = double.issueGrant({ clientId: app.clientId, scope: 'adsread' });
    await adoptGrant(v, 'reddit_ads', app.label, grant.refreshToken, { accounts: ['a2_xyz'], name: 'acct' });
    await v.sql("update oauth_tokens_vault set access_token_expires_at = now() - interval '1 minute'");
    double.revokeGrant(grant.refreshToken);
    const result = await v.cli(['token', 'get', 'acct']);
    expect(result.code, result.stderr).toBe(4);
    expect(result.stderr).toContain('credvault connect');
    expect(await statusOf(v)).toMatchObject({ status: 'needs_reauth', urgency: 'critical' });
  });

  it('a process killed mid-refresh leaves a record that status reports, and the next refresh clears it', async () => {
    const double = await microsoft();
    const { v } = await connected(double);
    double.faults.hangNext(1);
    const before = double.refreshAttempts;
    const child = v.spawn(['token', 'get', 'acct']);
    child.stdin!.end();
    await until(() => double.refreshAttempts !== before, { intervalMs: 50 });
    expect(double.refreshAttempts).toBe(before + 1);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));
    // Time passes: the dead process's lease lapses.
    await v.sql("update oauth_tokens_vault set lease_expires_at = now() - interval '1 second'");
    const status = await statusOf(v);
    expect(status).toMatchObject({ status: 'active', urgency: 'warning' });
    expect(status.problem).toContain('never recorded its answer');
    const refreshed = await v.cli(['connections', 'refresh', 'acct']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(await statusOf(v)).toMatchObject({ urgency: 'ok' });
    const audit = await v.json<Array<{ action: string; detail: Record<string, unknown> }>>(['audit', 'list']);
    expect(
      audit.find((a) => a.action === 'token.refresh')?.detail.recovered_unrecorded_refresh_from,
    ).toBeDefined();
  });
});

// What each format prints and how exec runs its child: once (the database only serves the token, as
// every test on both has it do).
describe.runIf(ONCE)('token get formats and exec', () => {
  it('end with their own exit code when standard error is a pipe its reader closed (2>&1 | head -1)', async () => {
    const { v } = await connected(await google(), 'google_ads', { expired: false });
    /** `credvault ARGS` with its standard error a pipe closed at once. */
    const run = (args: string[]) =>
      new Promise<number | null>((resolve) => {
        const child = spawn(process.execPath, [BIN, ...args], {
          env: v.env as NodeJS.ProcessEnv,
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        child.stderr!.destroy();
        child.on('close', (code) => resolve(code));
      });
    // Before, 1 (the error line's second write met EPIPE, unhandled): a script could not tell a missing
    // connection (3) or a missing program (127) from a bug.
    expect(await run(['token', 'get', 'nosuch'])).toBe(3);
    expect(await run(['exec', 'acct', '--', 'credvault-no-such-program'])).toBe(127);
    expect(await run(['apps', 'show', 'nosuch', '--json'])).toBe(3);
  });

  it('a refresh token leaves only for Google Ads, and only through env, google-ads-yaml and exec', async () => {
    const leaks = async (
      double: MicrosoftDouble | GoogleDouble,
      platform: 'microsoft_ads' | 'google_ads',
      formats: string[],
    ) => {
      const { v } = await connected(double, platform);
      const printed: Record<string, string> = {};
      for (const format of formats) {
        const run = await v.cli(['token', 'get', 'acct', '--format', format], { secretOutput: true });
        expect(run.code, run.stderr).toBe(0);
        printed[format] = run.stdout;
      }
      const ran = await v.cli(['exec', 'acct', '--', 'env'], { secretOutput: true });
      expect(ran.code, ran.stderr).toBe(0);
      expect(ran.stdout).toContain('CREDVAULT_ACCESS_TOKEN=');
      printed.exec = ran.stdout;
      // Every refresh token the platform ever issued (Microsoft rotates them) is looked for.
      const refreshTokens = [...double.refreshTokens.keys()];
      expect(refreshTokens.length).toBeGreaterThan(0);
      return Object.entries(printed)
        .filter(([, out]) => refreshTokens.some((token) => out.includes(token)))
        .map(([where]) => where);
    };
    expect(await leaks(await microsoft(), 'microsoft_ads', ['json', 'env'])).toEqual([]);
    // (Google's env and exec carry it: the test below.)
    const google = await startGoogleDouble();
    cleanups.push(() => google.close());
    expect(await leaks(google, 'google_ads', ['raw', 'json', 'header'])).toEqual(['exec']);
  });

  it('env carries the Google Ads client library variables; exec runs with them and passes the exit code on', async () => {
    const double = await startGoogleDouble();
    cleanups.push(() => double.close());
    const { v, app, grant } = await connected(double, 'google_ads');
    const env = await v.cli(['token', 'get', 'acct', '--format', 'env'], { secretOutput: true });
    expect(env.code, env.stderr).toBe(0);
    const vars = Object.fromEntries(
      env.stdout
        .trim()
        .split('\n')
        .map((line) => line.split(/=(.*)/s).slice(0, 2)),
    );
    expect(vars).toMatchObject({
      GOOGLE_ADS_CLIENT_ID: app.clientId,
      GOOGLE_ADS_CLIENT_SECRET: app.clientSecret,
      GOOGLE_ADS_DEVELOPER_TOKEN: app.developerToken,
      GOOGLE_ADS_REFRESH_TOKEN: grant.refreshToken,
      GOOGLE_ADS_USE_PROTO_PLUS: 'True',
      CREDVAULT_PLATFORM: 'google_ads',
      CREDVAULT_ACCOUNT_ID: '1234567890',
    });
    expect(double.accessTokens.has(vars.CREDVAULT_ACCESS_TOKEN!)).toBe(true);

    const yaml = await v.cli(['token', 'get', 'acct', '--format', 'google-ads-yaml'], { secretOutput: true });
    expect(yaml.code, yaml.stderr).toBe(0);
    expect(yaml.stdout).toContain(`refresh_token: ${grant.refreshToken}`);
    expect(yaml.stdout).toContain('use_proto_plus: true');

    // A disabled app: refused before anything is served (and recorded as served) for nothing printed.
    expect((await v.cli(['apps', 'disable', app.label])).code).toBe(0);
    const servedBefore = (await v.sql("select id from credential_access_audit where action = 'token.serve'"))
      .length;
    const disabled = await v.cli(['token', 'get', 'acct', '--format', 'env'], { secretOutput: true });
    expect(disabled.code).toBe(7);
    expect(disabled.stdout).toBe('');
    expect((await v.sql("select id from credential_access_audit where action = 'token.serve'")).length).toBe(
      servedBefore,
    );
    expect((await v.cli(['apps', 'enable', app.label])).code).toBe(0);

    // 42 is no exit code of credvault's own; and the keys to the whole vault stay out of the child.
    // PGPASSWORD reaches the vault only on PostgreSQL (the driver takes it when DATABASE_URL has none).
    const pgPassword =
      DB_KIND === 'postgres' ? 'test -z "$PGPASSWORD"' : 'test "$PGPASSWORD" = other-database';
    // Nor what would have the Google Ads client library act as someone else or read another
    // configuration (a service account, another linked customer); a setting of no identity stays.
    const foreign =
      'test -z "$GOOGLE_ADS_JSON_KEY_FILE_PATH$GOOGLE_ADS_CONFIGURATION_FILE_PATH$GOOGLE_ADS_LINKED_CUSTOMER_ID$GOOGLE_ADS_USE_APPLICATION_DEFAULT_CREDENTIALS" && test "$GOOGLE_ADS_ENDPOINT" = googleads.example:443';
    const script = `test "$GOOGLE_ADS_REFRESH_TOKEN" = "$EXPECTED" && test -n "$CREDVAULT_ACCESS_TOKEN" && test -z "$CREDENTIAL_MASTER_KEY_FILE" && test -z "$VAULT_TOKEN" && test -z "$GOOGLE_OAUTH_ACCESS_TOKEN" && test -z "$DATABASE_URL" && test -z "$CREDVAULT_HOME" && ${pgPassword} && ${foreign} && exit 42`;
    const ran = await v.cli(['exec', 'acct', '--', 'sh', '-c', script], {
      // Set here (on PostgreSQL, DATABASE_URL is set too): each must be gone in the child.
      env: {
        EXPECTED: grant.refreshToken,
        CREDENTIAL_MASTER_KEY_FILE: `${v.home}/master.key`,
        VAULT_TOKEN: 'hvs.not-for-children',
        GOOGLE_OAUTH_ACCESS_TOKEN: 'ya29.not-for-children',
        PGPASSWORD: 'other-database',
        GOOGLE_ADS_JSON_KEY_FILE_PATH: '/elsewhere/service-account.json',
        GOOGLE_ADS_CONFIGURATION_FILE_PATH: '/elsewhere/google-ads.yaml',
        GOOGLE_ADS_LINKED_CUSTOMER_ID: '9998887776',
        GOOGLE_ADS_USE_APPLICATION_DEFAULT_CREDENTIALS: 'True',
        GOOGLE_ADS_ENDPOINT: 'googleads.example:443',
      },
    });
    expect(ran.code, ran.stderr).toBe(42);
    // The database given with --database-url rather than DATABASE_URL: its password stays out alike.
    if (v.databaseUrl) {
      const flagged = await v.cli(
        [
          '--database-url',
          v.databaseUrl,
          'exec',
          'acct',
          '--',
          'sh',
          '-c',
          'echo "pg=$PGPASSWORD|$PGPASSFILE"',
        ],
        {
          env: { DATABASE_URL: undefined, PGPASSWORD: 'other-database', PGPASSFILE: join(v.root, '.pgpass') },
          secretOutput: true,
        },
      );
      expect(flagged.code, flagged.stderr).toBe(0);
      expect(flagged.stdout).toBe('pg=|\n');
    }
    const nested = await v.cli(['exec', 'acct', '--', 'true'], { env: { CREDVAULT_EXEC: 'outer' } });
    expect(nested.code).toBe(2);
    expect(nested.stderr).toContain('does not nest');
    expect((await v.cli(['exec', 'acct', '--', 'true'], { env: { CREDVAULT_EXEC: '' } })).code).toBe(2);
    // A child killed by a signal: 128 + its number, as a shell says it (a crash is not a hangup).
    expect((await v.cli(['exec', 'acct', '--', 'sh', '-c', 'kill -SEGV $$'])).code).toBe(139);
    expect((await v.cli(['exec', 'acct', '--', 'sh', '-c', 'kill -USR1 $$'])).code).toBe(138);
    // No terminal here: a signal sent to credvault alone is sent on to the child, once.
    const waiting = v.spawn([
      'exec',
      'acct',
      '--',
      'sh',
      '-c',
      "n=0; trap 'n=$((n+1))' INT; echo ready; while [ $n -lt 2 ]; do sleep 0.05; [ -e stop ] && exit $((40+n)); done; exit 9",
    ]);
    waiting.stdin!.end();
    const exited = new Promise<number | null>((resolve) => waiting.on('close', (code) => resolve(code)));
    await new Promise<void>((resolve) => waiting.stdout!.once('data', () => resolve()));
    waiting.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 400));
    writeFileSync(join(v.root, 'stop'), '');
    expect(await exited).toBe(41);
    const audit = await v.json<Array<{ action: string; detail: { revealed?: string[] } }>>(['audit', 'list']);
    expect(
      audit.filter((a) => a.action === 'credentials.export').map((a) => a.detail.revealed),
    ).toContainEqual(['refresh_token', 'client_secret', 'developer_token']);
  });

  it.skipIf(!existsSync('/usr/bin/script'))(
    'exec at a terminal: Ctrl-C reaches the child once (the terminal signals it; credvault does not again)',
    async () => {
      const double = await microsoft();
      const { v } = await connected(double);
      const trap = join(v.root, 'trap.sh');
      writeFileSync(
        trap,
        "n=0; trap 'n=$((n+1))' INT; echo ready; i=0; while [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done; exit $((40+n))\n",
      );
      // script(1) runs credvault on a pseudo-terminal; the ^C written to it is the terminal's SIGINT
      // to the foreground process group.
      const child = spawn(
        '/usr/bin/script',
        // `exec`: the shell script(1) starts must not stay between the terminal and credvault.
        ['-qec', `exec '${process.execPath}' '${BIN}' exec acct -- sh '${trap}'`, '/dev/null'],
        { env: { ...v.env } as NodeJS.ProcessEnv, cwd: v.root, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = '';
      const ready = new Promise<void>((resolve) =>
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready')) resolve();
        }),
      );
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      await ready;
      child.stdin!.write('\x03');
      expect(await exited, out).toBe(41);
    },
  );
});

describe('fail closed', () => {
  it('token get hands out no token when its audit record cannot be written', async () => {
    const double = await microsoft();
    // Its access token as the grant's adoption left it: an hour or more to live, served without a refresh.
    const { v } = await connected(double, 'microsoft_ads', { expired: false });
    await v.refuseAuditWrites();
    const refused = await v.cli(['token', 'get', 'acct']);
    expect(refused.code).toBe(8);
    expect(refused.stdout).toBe('');
    await v.sql('drop trigger refuse_audit on credential_access_audit');
    const served = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
    expect(served.code).toBe(0);
    expect(served.stdout.trim().length).toBeGreaterThan(10);
  });

  it('neither do exec nor the formats that hand out the refresh token and client secret', async () => {
    const double = await google();
    const { v, app, grant } = await connected(double, 'google_ads', { expired: false });
    await v.refuseAuditWrites();
    const marker = join(v.root, 'ran');
    for (const args of [
      ['token', 'get', 'acct', '--format', 'env'],
      ['token', 'get', 'acct', '--format', 'google-ads-yaml'],
      ['exec', 'acct', '--', 'sh', '-c', `touch ${marker}; env`],
    ]) {
      const refused = await v.cli(args);
      expect(refused.code, `${args.join(' ')}: ${refused.stderr}`).toBe(8);
      expect(refused.stdout, args.join(' ')).toBe('');
    }
    // exec's command never ran.
    expect(existsSync(marker)).toBe(false);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret, ...double.accessTokens.keys()]);
    // The same commands once the log takes records again.
    await v.sql('drop trigger refuse_audit on credential_access_audit');
    const ran = await v.cli(['exec', 'acct', '--', 'sh', '-c', `touch ${marker}`]);
    expect(ran.code, ran.stderr).toBe(0);
    expect(existsSync(marker)).toBe(true);
    const env = await v.cli(['token', 'get', 'acct', '--format', 'env'], { secretOutput: true });
    expect(env.code, env.stderr).toBe(0);
    expect(env.stdout).toContain(grant.refreshToken);
  });
});

describe('a Microsoft refresh', () => {
  it("asks for the scope the grant was given, not the app's scopes of today: a scope added to the app ends no connection", async () => {
    const double = await microsoft();
    const { v, app } = await connected(double, 'microsoft_ads', { expired: false });
    const updated = await v.cli([
      'apps',
      'update',
      app.label,
      '--scope',
      MICROSOFT_ADS_SCOPE,
      '--scope',
      'offline_access',
      '--scope',
      'https://ads.microsoft.com/ads.manage',
    ]);
    expect(updated.code, updated.stderr).toBe(0);
    // Before: scope named ads.manage too, which this grant never had; Microsoft refused the refresh
    // as invalid_grant (AADSTS70000) and the connection needed a person (exit 4) for good.
    const refreshed = await v.cli(['connections', 'refresh', 'acct', '--force']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(double.tokenRequests('refresh_token').at(-1)!.form?.get('scope')).toBe(
      `${MICROSOFT_ADS_SCOPE} offline_access`,
    );
    expect(await statusOf(v)).toMatchObject({ status: 'active' });
  });
});

describe.runIf(ONCE)('a refresh answered with an OpenID Connect error', () => {
  it('interaction_required and consent_required (Microsoft: MFA now required, consent withdrawn) need a person at once; temporarily_unavailable is retried', async () => {
    const double = await microsoft();
    const { v } = await connected(double);
    // A 400 temporarily_unavailable (AADSTS90033) then an answer: retried, and served.
    const before = double.tokenRequests('refresh_token').length;
    double.faults.failNext(1, {
      status: 400,
      body: {
        error: 'temporarily_unavailable',
        error_description: 'AADSTS90033: A transient error has occurred. Please try again.',
      },
    });
    const retried = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
    expect(retried.code, retried.stderr).toBe(0);
    expect(double.tokenRequests('refresh_token').length - before).toBe(2);
    for (const [error, description] of [
      [
        'interaction_required',
        'AADSTS50079: Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication.',
      ],
      [
        'consent_required',
        'AADSTS65001: The user or administrator has not consented to use the application.',
      ],
    ] as const) {
      await v.sql(
        "update ad_account_connections set status = 'active', status_message = null, consecutive_failures = 0",
      );
      await v.sql('update oauth_tokens_vault set cooldown_until = null, last_error_code = null');
      double.faults.failNext(1, { status: 400, body: { error, error_description: description } });
      const refused = await v.cli(['connections', 'refresh', 'acct', '--force']);
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain(error);
      // Before: taken as the app's own problem ("check its client id and secret"), the connection
      // left active and tried again and again; a person has to sign in again through connect.
      expect(refused.stderr).not.toContain('client id and secret');
      expect(await statusOf(v)).toMatchObject({ status: 'needs_reauth' });
    }
  });
});

describe.runIf(ONCE)(
  'a token endpoint answering HTTP 200 with something that is no OAuth token response',
  () => {
    it("(a captive proxy's HTML login page, JSON without an access token) is the platform unavailable: exit 5, retried and cooled down as a 5xx, never a refused token", async () => {
      const double = await google();
      const { v, app, grant } = await connected(double, 'google_ads');
      // A login page that echoes what it was sent: none of it is shown.
      const page = {
        status: 200,
        body: `<html><body>Sign in to Hotel Wi-Fi to continue (${grant.refreshToken})</body></html>`,
        headers: { 'content-type': 'text/html; charset=utf-8' },
      };
      const sent = () => double.tokenRequests('refresh_token').length;
      const before = sent();
      double.faults.failNext(3, page);
      // Before: exit 2 (invalid_input), "… refused the refresh token … failed with HTTP 200".
      const html = await v.cli(['token', 'get', 'acct']);
      expect(html.code, html.stderr).toBe(5);
      expect(html.stderr).toMatch(/answered HTTP 200 with text\/html, which is not an OAuth token response/);
      expect(html.stderr).not.toContain('refused');
      expect(html.stderr).not.toContain('Wi-Fi');
      // Tried again as a 5xx is (three attempts), counted once, the connection still active.
      expect(sent() - before).toBe(3);
      expect(await statusOf(v)).toMatchObject({ status: 'active', consecutive_failures: 1 });
      // Within the cool-down the recorded failure answers, with the same exit code; the platform is not asked.
      const cooled = await v.cli(['token', 'get', 'acct', '--json']);
      expect(cooled.code, cooled.stderr).toBe(5);
      expect(JSON.parse(cooled.stderr).error.code).toBe('unavailable');
      expect(sent() - before).toBe(3);
      // JSON without an access token: exit 5 already, but said to be refused.
      await v.sql('update oauth_tokens_vault set cooldown_until = null');
      double.faults.failNext(3, { status: 200, body: { token_type: 'Bearer', expires_in: 3599 } });
      const fieldless = await v.cli(['token', 'get', 'acct']);
      expect(fieldless.code, fieldless.stderr).toBe(5);
      expect(fieldless.stderr).toContain('not a valid OAuth token response');
      expect(fieldless.stderr).not.toContain('refused');
      expect(await statusOf(v)).toMatchObject({ status: 'active', consecutive_failures: 2 });
      // connections add meets the same page: exit 5, to retry later, not invalid input; nothing stored.
      double.faults.reset();
      double.faults.failNext(3, page);
      const other = double.issueGrant({
        clientId: app.clientId,
        scope: 'https://www.googleapis.com/auth/adwords',
      });
      const added = await addConnection(v, 'google_ads', app.label, other.refreshToken, {
        accounts: ['1234567890'],
        name: 'again',
        json: true,
      });
      expect(added.code, added.stderr).toBe(5);
      expect(JSON.parse(added.stderr).error).toMatchObject({ code: 'unavailable' });
      expect(added.stderr).toContain('HTTP 200 with text/html');
      expect(added.stderr).not.toContain('refused');
      await expectNoSecretsLeaked(v, [grant.refreshToken, other.refreshToken]);
    });
  },
);

describe.runIf(ONCE)('an access token answered without expires_in', () => {
  it("is taken to last the platform's documented life (Google: an hour), not for ever", async () => {
    const double = await google();
    const { v } = await connected(double, 'google_ads');
    double.faults.failNext(1, {
      status: 200,
      body: {
        access_token: 'ya29.no-expires-in',
        token_type: 'Bearer',
        scope: 'https://www.googleapis.com/auth/adwords',
      },
    });
    const started = Date.now();
    const served = await v.cli(['token', 'get', 'acct'], { secretOutput: true });
    expect(served.code, served.stderr).toBe(0);
    expect(served.stdout.trim()).toBe('ya29.no-expires-in');
    // Before: no end at all (null), so the token was served, stale, for good and never refreshed.
    const shown = await v.json<{ access_token_expires_at: string | null }>(['connections', 'show', 'acct']);
    const ends = Date.parse(shown.access_token_expires_at ?? '');
    expect(ends - started).toBeGreaterThan(3_590_000);
    expect(ends - Date.now()).toBeLessThanOrEqual(3_600_000);
  });
});

describe.runIf(ONCE)('a connection in error because the platform refused the app itself', () => {
  it('is told to fix the app (a secret rotated at the platform), not to connect again', async () => {
    const double = await google();
    const { v, app } = await connected(double, 'google_ads', { expired: false });
    // The app's secret rotated at Google: every refresh is invalid_client.
    (double.clients.get(app.clientId) as { clientSecret: string }).clientSecret = 'GOCSPX-rotated';
    for (let i = 0; i < 3; i++) {
      const refused = await v.cli(['connections', 'refresh', 'acct', '--force']);
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('invalid_client');
    }
    const report = await v.json<{ connections: Array<{ status: string; action: string }> }>(['status']);
    expect(report.connections[0]).toMatchObject({ status: 'error' });
    // Before: "connections refresh --force, then credvault connect …", which fails on the same secret.
    expect(report.connections[0]!.action).toBe(
      `credvault apps update google_ads/${app.label} --new-client-secret (the platform refused the app's own credentials), then credvault connections refresh acct --force`,
    );
    // token get, refused while the connection cools down, says the same.
    const refused = await v.cli(['token', 'get', 'acct']);
    expect(refused.code, refused.stderr).toBe(4);
    expect(refused.stderr).toContain(
      `The platform refused the app itself: update its client secret (\`credvault apps update google_ads/${app.label} --new-client-secret\`), then \`credvault connections refresh acct --force\`.`,
    );
  });
});
