import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { adAccountConnections, oauthTokensVault } from '../../src/db/schema/index.js';
import { openContext } from '../../src/services/context.js';
import { openToken } from '../../src/services/grants.js';
import {
  GOOGLE_ADWORDS_SCOPE,
  MICROSOFT_ADS_SCOPE,
  type MicrosoftDouble,
  startGoogleDouble,
  startMicrosoftDouble,
} from '../doubles/index.js';
import { client, startDaemon } from '../helpers/daemon.js';
import { addAppFor, adoptGrant } from '../helpers/flows.js';
import { ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';

/**
 * Rules of shared/spec/security.md that no other test showed on its own: each test here fails when
 * its rule is broken. Their subjects are decisions made in memory, through statements the tests on
 * both databases run too: once (test/helpers/vault.ts, ONCE).
 */

const vault = vaultsPerTest();
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const clean of cleanups.splice(0).reverse()) await clean();
});

async function microsoft(): Promise<MicrosoftDouble> {
  const double = await startMicrosoftDouble();
  cleanups.push(() => double.close());
  return double;
}

/** A vault with a Microsoft Ads connection `acct` (account 987), adopted from a grant the double issued. */
async function microsoftConnection(double: MicrosoftDouble, v?: TestVault) {
  const into = v ?? (await vault());
  const app = await addAppFor(into, 'microsoft_ads', double as never);
  const grant = double.issueGrant({
    clientId: app.clientId,
    scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
  } as never);
  await adoptGrant(into, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987'], name: 'acct' });
  return { v: into, app, grant };
}

/**
 * The vault's one grant and its connection, read in one opening: the refresh token as stored
 * (ciphertext) and decrypted by credvault's own code, and the connection's status.
 */
async function stored(v: TestVault) {
  const ctx = await openContext(resolveConfig({}, { ...v.env } as NodeJS.ProcessEnv), { name: 'test-check' });
  try {
    const grants = await ctx.db.select().from(oauthTokensVault);
    expect(grants).toHaveLength(1);
    const secret = await openToken(ctx, grants[0]!, 'refresh');
    const [connection] = await ctx.db
      .select({ status: adAccountConnections.status, failures: adAccountConnections.consecutiveFailures })
      .from(adAccountConnections);
    return {
      ciphertext: grants[0]!.refreshTokenEnc!,
      refreshToken: secret!.reveal(),
      status: connection!.status,
      failures: connection!.failures,
    };
  } finally {
    await ctx.close();
  }
}

interface AuditRow {
  actor: string;
  action: string;
  target_type: string;
  target_id: string | null;
  outcome: string;
  detail: Record<string, unknown>;
}

describe('client tokens', () => {
  it.runIf(ONCE)(
    'are random: two `clients create` show distinct tokens, each cvc_ and 32 random bytes in base64url, stored only as their SHA-256',
    async () => {
      const v = await vault();
      const first = await client(v, ['first', '--all']);
      const second = await client(v, ['second', '--all']);
      for (const token of [first, second]) {
        expect(token).toMatch(/^cvc_[A-Za-z0-9_-]{43}$/);
        expect(Buffer.from(token.slice(4), 'base64url')).toHaveLength(32);
      }
      expect(first).not.toBe(second);
      // Not one derived from the other: they share no more than chance would have them share.
      const a = Buffer.from(first.slice(4), 'base64url');
      const b = Buffer.from(second.slice(4), 'base64url');
      expect(a.filter((byte, i) => byte === b[i]).length).toBeLessThan(8);
      const stored = await v.sql<{ name: string; token_hash: string }>(
        'select name, token_hash from api_clients order by name',
      );
      const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');
      expect(stored).toEqual([
        { name: 'first', token_hash: sha256(first) },
        { name: 'second', token_hash: sha256(second) },
      ]);
    },
  );

  it.runIf(ONCE)(
    'scoped to a platform: a token for a connection of that platform from the daemon, 403 for another platform’s, and the refusal audited (token.serve denied)',
    async () => {
      const double = await microsoft();
      const { v } = await microsoftConnection(double);
      const google = await startGoogleDouble();
      cleanups.push(() => google.close());
      const googleApp = await addAppFor(v, 'google_ads', google as never);
      const googleGrant = google.issueGrant({
        clientId: googleApp.clientId,
        scope: GOOGLE_ADWORDS_SCOPE,
      } as never);
      await adoptGrant(v, 'google_ads', googleApp.label, googleGrant.refreshToken, {
        accounts: ['1234567890'],
        name: 'gads',
      });
      const token = await client(v, ['ms-only', '--platform', 'microsoft_ads']);
      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop('SIGKILL'));
      const served = await daemon.get('/v1/connections/acct/token', { token });
      expect(served.status, served.body).toBe(200);
      expect(double.accessTokens.has(served.json<{ access_token: string }>().access_token)).toBe(true);
      // The other platform's connection, by its name and by PLATFORM:ACCOUNT.
      for (const ref of ['gads', 'google_ads:1234567890']) {
        const refused = await daemon.get(`/v1/connections/${encodeURIComponent(ref)}/token`, { token });
        expect(refused.status, refused.body).toBe(403);
        expect(refused.json<{ error: { code: string } }>().error.code).toBe('forbidden');
        expect(refused.body).not.toContain('access_token');
      }
      const audit = await v.json<AuditRow[]>(['audit', 'list', '--actor', 'ms-only']);
      const [gads] = await v.sql<{ id: string }>(
        "select id from ad_account_connections where platform = 'google_ads'",
      );
      expect(audit.map((row) => [row.action, row.outcome, row.target_id])).toEqual([
        ['token.serve', 'denied', gads!.id],
        ['token.serve', 'denied', gads!.id],
        ['token.serve', 'success', expect.any(String)],
      ]);
      expect(audit[2]!.target_id).not.toBe(gads!.id);
    },
  );
});

describe('refresh', () => {
  it.runIf(ONCE)(
    'an answer without a refresh token keeps the stored one: two forced refreshes succeed, and the stored token is still the one the platform issued, and still accepted',
    async () => {
      const double = await microsoft();
      const { v, grant } = await microsoftConnection(double);
      // From here the platform answers refreshes without a refresh_token (and rotates nothing).
      double.settings.omitRefreshToken = true;
      const before = await stored(v);
      expect(double.refreshTokens.has(before.refreshToken)).toBe(true);
      const attempts = double.refreshAttempts;
      for (let i = 0; i < 2; i++) {
        const refreshed = await v.cli(['connections', 'refresh', 'acct', '--force']);
        expect(refreshed.code, refreshed.stderr).toBe(0);
      }
      expect(double.refreshAttempts).toBe(attempts + 2);
      // Both sent the stored token.
      const sent = double.tokenRequests('refresh_token').slice(attempts);
      expect(sent.map((r) => r.form?.get('refresh_token'))).toEqual([
        before.refreshToken,
        before.refreshToken,
      ]);
      // Stored as it was (the same bytes), and the platform's record of it: never replaced, still valid.
      const after = await stored(v);
      expect(after.ciphertext).toBe(before.ciphertext);
      expect(after.refreshToken).toBe(before.refreshToken);
      const record = double.refreshTokens.get(after.refreshToken)!;
      expect(record).toMatchObject({ revoked: false, supersededAt: null });
      expect(double.grants.get(grant.grantId)?.revoked).toBe(false);
    },
  );

  it.runIf(ONCE)(
    'three 503s, then three 429s, mark the connection error and leave the stored refresh token as it was; it works once the platform is back',
    async () => {
      const double = await microsoft();
      const { v } = await microsoftConnection(double);
      for (const status of [503, 429]) {
        const before = await stored(v);
        expect(before).toMatchObject({ status: 'active', failures: 0 });
        // Three refreshes, each of three attempts (Retry-After: 0, so no wait between them).
        double.faults.failNext(9, {
          status,
          body: { error: 'temporarily_unavailable', error_description: 'try later' },
          headers: { 'retry-after': '0' },
        });
        for (let i = 0; i < 3; i++) {
          const failed = await v.cli(['connections', 'refresh', 'acct', '--force']);
          expect(failed.code, failed.stderr).toBe(5);
        }
        expect(double.faults.pending.failures).toBe(0);
        // In error, with the same bytes stored, decrypting to the same token.
        expect(await stored(v)).toEqual({ ...before, status: 'error', failures: 3 });
        // The platform is back: the stored token is accepted.
        const attempts = double.refreshAttempts;
        const recovered = await v.cli(['connections', 'refresh', 'acct', '--force']);
        expect(recovered.code, recovered.stderr).toBe(0);
        expect(double.tokenRequests('refresh_token').slice(attempts)[0]!.form?.get('refresh_token')).toBe(
          before.refreshToken,
        );
        expect(await stored(v)).toMatchObject({ status: 'active', failures: 0 });
      }
    },
  );
});

describe('audit', () => {
  it.runIf(ONCE)(
    'every creation, decryption, update, refresh, revocation and token served writes its row, with its action, target and outcome',
    async () => {
      const double = await microsoft();
      const { v, app } = await microsoftConnection(double);
      const [connection] = await v.sql<{ id: string }>('select id from ad_account_connections');
      const newSecret = `msft-secret-${Date.now()}`;
      // Each step runs as an actor of its own: its rows are the ones with that actor.
      const steps: Array<{
        args: string[];
        input?: string;
        before?: () => void;
        rows: (ids: { client: string }) => Array<[string, string, string | null]>;
      }> = [
        {
          args: ['clients', 'create', 'reporting', '--all'],
          rows: (ids) => [['client.create', 'client', ids.client]],
        },
        {
          args: ['clients', 'revoke', 'reporting'],
          rows: (ids) => [['client.revoke', 'client', ids.client]],
        },
        {
          args: ['connections', 'rename', 'acct', 'acct2'],
          rows: () => [['connection.rename', 'connection', connection!.id]],
        },
        {
          args: ['apps', 'update', app.label, '--new-client-secret'],
          input: `${newSecret}\n`,
          // The platform has the new secret too, so that the refresh below is accepted.
          before: () => {
            double.defaultClient!.clientSecret = newSecret;
          },
          rows: () => [['app.update', 'app', app.id]],
        },
        { args: ['token', 'get', 'acct2'], rows: () => [['token.serve', 'connection', connection!.id]] },
        {
          args: ['connections', 'refresh', 'acct2', '--force'],
          rows: () => [
            ['connection.refresh', 'connection', connection!.id],
            ['token.refresh', 'grant', expect.any(String)],
          ],
        },
        {
          args: ['connections', 'revoke', 'acct2'],
          rows: () => [['connection.revoke', 'connection', connection!.id]],
        },
      ];
      for (const [i, step] of steps.entries()) {
        step.before?.();
        const ran = await v.cli(step.args, {
          input: step.input,
          env: { CREDVAULT_ACTOR: `step-${i}` },
          secretOutput: true,
        });
        expect(ran.code, `${step.args.join(' ')}: ${ran.stderr}`).toBe(0);
      }
      const audit = await v.json<AuditRow[]>(['audit', 'list', '--limit', '200']);
      const [made] = await v.sql<{ id: string }>("select id from api_clients where name = 'reporting'");
      for (const [i, step] of steps.entries()) {
        const rows = audit.filter((row) => row.actor === `step-${i}`);
        const sortByAction = (list: Array<[string, string, unknown]>) =>
          [...list].sort((x, y) => x[0].localeCompare(y[0]));
        expect(
          sortByAction(rows.map((row) => [row.action, row.target_type, row.target_id])),
          step.args.join(' '),
        ).toEqual(sortByAction(step.rows({ client: made!.id })));
        for (const row of rows) expect(row.outcome, `${step.args.join(' ')}: ${row.action}`).toBe('success');
      }
      // And the vault's own creation (the template every test copies is what `credvault init` made).
      const init = audit.filter((row) => row.action === 'vault.init');
      expect(init).toHaveLength(1);
      expect(init[0]!.outcome).toBe('success');
    },
  );
});

describe("the daemon's endpoint", () => {
  it.runIf(ONCE)(
    'listens beyond loopback only with --allow-remote: an IPv4 address and [::] are refused (exit 2) without it',
    async () => {
      const v = await vault();
      for (const listen of ['192.0.2.1:0', '[::]:0']) {
        const refused = await v.cli(['daemon', '--listen', listen]);
        expect(refused.code, `${listen}: ${refused.stderr}`).toBe(2);
        expect(refused.stderr).toContain('--allow-remote');
        expect(refused.stderr).toContain(listen.replace(/:0$/, ''));
      }
    },
  );
});
