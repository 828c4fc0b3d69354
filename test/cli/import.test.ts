import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  type AllDoubles,
  type Double,
  GOOGLE_ADWORDS_SCOPE,
  MICROSOFT_ADS_SCOPE,
  REDDIT_SCOPES,
  REDDIT_TEST_USER_AGENT,
  startAllDoubles,
} from '../doubles/index.js';
import { startDaemon } from '../helpers/daemon.js';
import { addAppFor, adoptGrant, type PlatformKey } from '../helpers/flows.js';
import { expectNoSecretsLeaked, fakeSecret } from '../helpers/secrets.js';
import { ONCE, type Query, type TestVault, vaultsPerTest } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vault = vaultsPerTest();

interface PlanRow {
  action: string;
  kind: string;
  platform: string;
  target: string;
  detail: string;
}
interface ImportJson {
  applied: boolean;
  plan: PlanRow[];
  unknown: string[];
  ignored: string[];
  unsupported: string[];
  connections: string[];
  verify: Array<{ connection: string; ok: boolean; error_code: string | null; message: string }> | null;
}

/** Everything but the audit log: what an import may change (in an opening of the database). */
async function stateIn(query: Query): Promise<string> {
  const parts: string[] = [];
  for (const table of [
    'data_keys',
    'oauth_app_credentials',
    'oauth_tokens_vault',
    'ad_account_connections',
  ]) {
    const rows = await query<{ row: unknown }>(`select to_jsonb(t) as row from ${table} t order by 1`);
    parts.push(`${table}: ${rows.map((r) => JSON.stringify(r.row)).join('\n')}`);
  }
  return parts.join('\n');
}

function vaultState(v: TestVault): Promise<string> {
  return v.session(stateIn);
}

async function auditActionsIn(query: Query): Promise<string[]> {
  const rows = await query<{ action: string }>('select action from credential_access_audit order by id');
  return rows.map((r) => r.action);
}

function auditActions(v: TestVault): Promise<string[]> {
  return v.session(auditActionsIn);
}

/** A vault, a Google Ads app on the double, a grant it issued, and a .env of them for ACCOUNTS. */
async function googleEnv(accounts: string) {
  const v = await vault();
  const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
  const first = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
  const file = join(v.root, '.env');
  writeFileSync(
    file,
    `GOOGLE_ADS_CLIENT_ID=${app.clientId}\nGOOGLE_ADS_REFRESH_TOKEN=${first.refreshToken}\nGOOGLE_ADS_CUSTOMER_ID=${accounts}\n`,
  );
  return { v, app, first, file };
}

/** The vault's state and its audit log, in one opening. */
function stateAndAudit(v: TestVault): Promise<{ state: string; audit: string[] }> {
  return v.session(async (query) => ({ state: await stateIn(query), audit: await auditActionsIn(query) }));
}

function doubleFor(platform: PlatformKey): Double<unknown, unknown> {
  return {
    google_ads: doubles.google,
    microsoft_ads: doubles.microsoft,
    linkedin_ads: doubles.linkedin,
    reddit_ads: doubles.reddit,
  }[platform] as unknown as Double<unknown, unknown>;
}

const SCOPES: Record<PlatformKey, string> = {
  google_ads: GOOGLE_ADWORDS_SCOPE,
  microsoft_ads: `${MICROSOFT_ADS_SCOPE} offline_access`,
  linkedin_ads: 'r_ads rw_ads',
  reddit_ads: REDDIT_SCOPES.join(' '),
};

/** A Microsoft app in the vault, a grant the double issued it, and the .env naming both (and `accounts`). */
async function microsoftSetup(v: TestVault) {
  const app = await addAppFor(v, 'microsoft_ads', doubleFor('microsoft_ads'));
  const grant = doubles.microsoft.issueGrant({
    clientId: app.clientId,
    scope: SCOPES.microsoft_ads,
  } as never);
  const env = (accounts: string) =>
    `MICROSOFT_ADS_CLIENT_ID=${app.clientId}\nMICROSOFT_ADS_CLIENT_SECRET=${app.clientSecret}\nMICROSOFT_ADS_DEVELOPER_TOKEN=${app.developerToken}\nMICROSOFT_ADS_REFRESH_TOKEN=${grant.refreshToken}\nMICROSOFT_ADS_CUSTOMER_ID=555\nMICROSOFT_ADS_ACCOUNT_ID=${accounts}\n`;
  return { app, env };
}

/**
 * The apps registered with credvault first (step 1 of the migration), pointed at the doubles, and a
 * refresh token per platform issued by each double: what a team's .env holds.
 */
async function legacySetup(v: TestVault) {
  const out = {} as Record<
    PlatformKey,
    {
      clientId: string;
      clientSecret: string;
      developerToken: string | null;
      refreshToken: string;
      accessToken: string;
    }
  >;
  for (const platform of ['google_ads', 'microsoft_ads', 'linkedin_ads', 'reddit_ads'] as PlatformKey[]) {
    const double = doubleFor(platform);
    const app = await addAppFor(v, platform, double);
    const grant = double.issueGrant({ clientId: app.clientId, scope: SCOPES[platform] } as never);
    out[platform] = {
      clientId: app.clientId,
      clientSecret: app.clientSecret,
      developerToken: app.developerToken,
      refreshToken: grant.refreshToken,
      accessToken: grant.accessToken,
    };
  }
  return out;
}

type Legacy = Awaited<ReturnType<typeof legacySetup>>;

/** A .env as ad-ops repositories have them: export lines, quotes, comments, other settings. */
function realisticEnv(c: Legacy): string {
  return `# ---- database ----
DATABASE_URL=postgres://app@db/app
SLACK_WEBHOOK_URL="https://hooks.slack.example/T000/B000"

# Google Ads (google-ads-python reads these)
export GOOGLE_ADS_DEVELOPER_TOKEN=${c.google_ads.developerToken}
export GOOGLE_ADS_CLIENT_ID="${c.google_ads.clientId}"
export GOOGLE_ADS_CLIENT_SECRET='${c.google_ads.clientSecret}'
export GOOGLE_ADS_REFRESH_TOKEN=${c.google_ads.refreshToken}   # from generate_user_credentials.py
GOOGLE_ADS_LOGIN_CUSTOMER_ID=111-222-3333
GOOGLE_ADS_CUSTOMER_ID=123-456-7890,1234567891
GOOGLE_ADS_USE_PROTO_PLUS=True

# Microsoft Advertising (the old Bing Ads names)
BING_ADS_CLIENT_ID=${c.microsoft_ads.clientId}
BING_ADS_CLIENT_SECRET=${c.microsoft_ads.clientSecret}
BING_ADS_DEVELOPER_TOKEN=${c.microsoft_ads.developerToken}
BING_ADS_REFRESH_TOKEN="${c.microsoft_ads.refreshToken}"
BING_ADS_CUSTOMER_ID=456
BING_ADS_ACCOUNT_ID=987

LINKEDIN_CLIENT_ID=${c.linkedin_ads.clientId}
LINKEDIN_CLIENT_SECRET=${c.linkedin_ads.clientSecret}
LINKEDIN_REFRESH_TOKEN=${c.linkedin_ads.refreshToken}
LINKEDIN_AD_ACCOUNT_ID=urn:li:sponsoredAccount:5101

REDDIT_ADS_CLIENT_ID=${c.reddit_ads.clientId}
REDDIT_ADS_CLIENT_SECRET=${c.reddit_ads.clientSecret}
REDDIT_ADS_REFRESH_TOKEN=${c.reddit_ads.refreshToken}
REDDIT_ADS_AD_ACCOUNT_ID=a2_xyz
REDDIT_ADS_USER_AGENT="${REDDIT_TEST_USER_AGENT}"
`;
}

function secretsOf(c: Legacy): string[] {
  return Object.values(c).flatMap((p) => [
    p.clientSecret,
    p.refreshToken,
    ...(p.developerToken ? [p.developerToken] : []),
  ]);
}

describe('import env', () => {
  it.runIf(ONCE)('reads the other prefixes too: MICROSOFT_ADS_ and LINKEDIN_ADS_ (and REDDIT_)', async () => {
    const v = await vault();
    const legacy = await legacySetup(v);
    const file = join(v.root, '.env');
    writeFileSync(
      file,
      realisticEnv(legacy)
        .replaceAll('BING_ADS_', 'MICROSOFT_ADS_')
        .replaceAll('LINKEDIN_', 'LINKEDIN_ADS_')
        .replaceAll('REDDIT_ADS_', 'REDDIT_'),
    );
    const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(result.applied).toBe(true);
    expect(result.unknown).toEqual(['DATABASE_URL', 'SLACK_WEBHOOK_URL']);
    const created = result.plan.filter((p) => p.action === 'create').map((p) => `${p.platform} ${p.target}`);
    expect(created.sort()).toEqual(
      [
        'google_ads 1234567890',
        'google_ads 1234567891',
        'linkedin_ads 5101',
        'microsoft_ads 987',
        'reddit_ads a2_xyz',
      ].sort(),
    );
    const details = await v.sql<{ details: Record<string, string> }>(
      "select details from ad_account_connections where platform = 'microsoft_ads'",
    );
    expect(details[0]!.details.customer_id).toBe('456');
  });

  it.runIf(ONCE)('imports a realistic .env for all four platforms, then again changes nothing', async () => {
    const v = await vault();
    const legacy = await legacySetup(v);
    const file = join(v.root, '.env');
    writeFileSync(file, realisticEnv(legacy));

    // --dry-run: the plan, and no write to apps, keys, tokens or connections.
    const before = await stateAndAudit(v);
    const dry = await v.cli(['import', 'env', '--dry-run'], { cwd: v.root });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/WOULD\s+KIND\s+PLATFORM\s+TARGET/);
    expect(dry.stdout).toMatch(/create\s+connection\s+google_ads\s+1234567890/);
    expect(dry.stderr).toContain('dry run: nothing was written');
    const afterDry = await stateAndAudit(v);
    expect(afterDry.state).toBe(before.state);
    // Comparing with the stored secrets decrypted them: that is recorded, and nothing else is.
    expect(afterDry.audit).toEqual([...before.audit, 'import.plan']);

    const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(result.applied).toBe(true);
    const rows = result.plan.map((p) => `${p.action} ${p.kind} ${p.platform} ${p.target}`).sort();
    expect(rows).toEqual(
      [
        // The apps were registered first with the same client ids: only what the .env adds changes
        // (the login customer id goes with the file's connections, not the app).
        'unchanged app google_ads google-app',
        'unchanged app microsoft_ads microsoft-app',
        'unchanged app linkedin_ads linkedin-app',
        'unchanged app reddit_ads reddit-app',
        'create connection google_ads 1234567890',
        'create connection google_ads 1234567891',
        'create connection microsoft_ads 987',
        'create connection linkedin_ads 5101',
        'create connection reddit_ads a2_xyz',
      ].sort(),
    );
    expect(result.plan.find((p) => p.kind === 'connection' && p.platform === 'google_ads')!.detail).toBe(
      'app google-app',
    );
    expect(result.unknown).toEqual(['DATABASE_URL', 'SLACK_WEBHOOK_URL']);
    expect(result.ignored).toEqual(['GOOGLE_ADS_USE_PROTO_PLUS']);
    expect(result.connections).toHaveLength(5);

    // The imported refresh tokens work: token get refreshes at each double.
    for (const ref of [
      'google_ads:1234567890',
      'microsoft_ads:987',
      'linkedin_ads:5101',
      'reddit_ads:a2_xyz',
    ]) {
      const token = await v.cli(['token', 'get', ref], { secretOutput: true });
      expect(token.code, `${ref}: ${token.stderr}`).toBe(0);
      expect(token.stdout.trim().length).toBeGreaterThan(10);
    }

    // The connections stored (a refresh changes none of what is looked at here), and the state the
    // second import must leave as it is.
    const stateAfter = await v.session(async (query) => {
      const connections = await query<{ platform: string; external_account_id: string }>(
        'select platform, external_account_id from ad_account_connections',
      );
      expect(connections.map((c) => `${c.platform}:${c.external_account_id}`).sort()).toEqual([
        'google_ads:1234567890',
        'google_ads:1234567891',
        'linkedin_ads:5101',
        'microsoft_ads:987',
        'reddit_ads:a2_xyz',
      ]);
      // The two Google accounts share the one consent the .env held.
      const grants = await query<{ n: number }>(
        "select count(distinct token_id)::int as n from ad_account_connections where platform = 'google_ads'",
      );
      expect(grants[0]!.n).toBe(1);
      const details = await query<{ details: Record<string, string> }>(
        "select details from ad_account_connections where platform = 'microsoft_ads'",
      );
      expect(details[0]!.details.customer_id).toBe('456');
      return stateIn(query);
    });

    // Again: nothing changes (and it says so).
    const again = await v.cli(['import', 'env', '--file', file]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain('nothing to change');
    expect(again.stdout).not.toMatch(/\bcreate\b|\bupdate\b/);
    const { state: stateAgain, audit } = await stateAndAudit(v);
    expect(stateAgain).toBe(stateAfter);
    expect(audit.filter((a) => a === 'import')).toHaveLength(2);
    expect(audit.filter((a) => a === 'connection.create')).toHaveLength(5);
    const verify = await v.cli(['audit', 'verify']);
    expect(verify.code, verify.stderr).toBe(0);
    await expectNoSecretsLeaked(v, secretsOf(legacy));
  });

  it.runIf(ONCE)(
    '--verify refreshes each imported connection and reports the one that does not work',
    async () => {
      const v = await vault();
      const legacy = await legacySetup(v);
      // The .env's Reddit refresh token is not one Reddit knows (revoked since it was written down).
      const file = join(v.root, 'prod.env');
      writeFileSync(
        file,
        realisticEnv(legacy).replace(
          legacy.reddit_ads.refreshToken,
          `${legacy.reddit_ads.refreshToken}-stale`,
        ),
      );
      const result = await v.cli(['import', 'env', '--file', file, '--verify', '--json']);
      // The import stands; the exit code says a person must look at one connection.
      expect(result.code, result.stderr).toBe(4);
      const report = JSON.parse(result.stdout) as ImportJson;
      expect(report.applied).toBe(true);
      const outcomes = Object.fromEntries(report.verify!.map((o) => [o.connection, o]));
      expect(Object.keys(outcomes).sort()).toEqual([
        'google_ads:1234567890',
        'google_ads:1234567891',
        'linkedin_ads:5101',
        'microsoft_ads:987',
        'reddit_ads:a2_xyz',
      ]);
      for (const ok of ['google_ads:1234567890', 'microsoft_ads:987', 'linkedin_ads:5101']) {
        expect(outcomes[ok]!.ok, outcomes[ok]!.message).toBe(true);
      }
      expect(outcomes['reddit_ads:a2_xyz']!.ok).toBe(false);
      expect(outcomes['reddit_ads:a2_xyz']!.error_code).toBe('reauth_required');
      const reddit = await v.json<{ status: string }>(['connections', 'show', 'reddit_ads:a2_xyz']);
      expect(reddit.status).toBe('needs_reauth');

      // Human output names the broken one. The same file again leaves it as it is (its token is the
      // one that failed), verifies every connection it names, and says so again.
      const human = await v.cli(['import', 'env', '--file', file, '--verify']);
      expect(human.code).toBe(4);
      expect(human.stderr).toMatch(/reddit_ads:a2_xyz does not work/);
      expect(human.stdout).toMatch(
        /unchanged\s+connection\s+reddit_ads\s+a2_xyz\s+.*needs_reauth: the platform refused this token/,
      );
      expect((await v.json<{ status: string }>(['connections', 'show', 'reddit_ads:a2_xyz'])).status).toBe(
        'needs_reauth',
      );
    },
  );

  it('an imported refresh token is refreshed by the daemon at once, not when its idle time is up', async () => {
    const v = await vault();
    const { env } = await microsoftSetup(v);
    const file = join(v.root, '.env');
    writeFileSync(file, env('987'));
    expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
    // Not refreshed by credvault yet: shown as such, not as refreshed at the import.
    const imported = await v.json<{ last_refreshed_at: string | null }>([
      'connections',
      'show',
      'microsoft_ads:987',
    ]);
    expect(imported.last_refreshed_at).toBeNull();
    const before = doubles.microsoft.refreshAttempts;
    const daemon = await startDaemon(v);
    try {
      await until(() => doubles.microsoft.refreshAttempts !== before);
      expect(doubles.microsoft.refreshAttempts).toBe(before + 1);
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
    const refreshed = await v.json<{ status: string; last_refreshed_at: string | null }>([
      'connections',
      'show',
      'microsoft_ads:987',
    ]);
    expect(refreshed.status).toBe('active');
    expect(refreshed.last_refreshed_at).not.toBeNull();
  });

  it.runIf(ONCE)(
    'adds accounts new to a file to the grant that holds its token, and refuses a disabled app',
    async () => {
      const v = await vault();
      const { app, env } = await microsoftSetup(v);
      const file = join(v.root, '.env');
      writeFileSync(file, env('987'));
      expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
      writeFileSync(file, env('987,988'));
      const second = await v.json<ImportJson>(['import', 'env', '--file', file, '--verify']);
      expect(second.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app microsoft-app',
        'unchanged connection 987',
        'create connection 988',
      ]);
      expect(second.verify!.map((o) => [o.connection, o.ok])).toEqual([
        ['microsoft_ads:987', true],
        ['microsoft_ads:988', true],
      ]);
      // A connection in error (its refreshes failed for other reasons) still holds the grant new
      // accounts join; one that needs a person holds a token the platform refused: new accounts are
      // not stored with it.
      const count = async (query: Query, table: string) =>
        (await query<{ n: number }>(`select count(*)::int as n from ${table}`))[0]!.n;
      await v.session(async (query) => {
        // One grant for the one consent: Microsoft rotates the refresh token, and a second copy would
        // be left holding the one it replaced.
        expect(await count(query, 'oauth_tokens_vault')).toBe(1);
        await query("update ad_account_connections set status = 'error' where external_account_id = '987'");
      });
      writeFileSync(file, env('987,988,990'));
      const withError = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(withError.plan.map((p) => `${p.action} ${p.target}`)).toEqual([
        'unchanged microsoft-app',
        'unchanged 987',
        'unchanged 988',
        'create 990',
      ]);
      expect(withError.plan[1]!.detail).toContain('error: its last refreshes failed');
      await v.session(async (query) => {
        expect(await count(query, 'oauth_tokens_vault')).toBe(1);
        await query("update ad_account_connections set status = 'needs_reauth'");
      });
      writeFileSync(file, env('987,988,990,991'));
      const dead = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(dead.plan.at(-1)).toMatchObject({ action: 'skip', target: '991' });
      expect(dead.plan.at(-1)!.detail).toContain('the platform refused this token for 987');
      // The connections' tokens belong to this client: another client id is refused while they hold them.
      const state = await v.session(async (query) => {
        expect(await count(query, 'ad_account_connections')).toBe(3);
        await query("update ad_account_connections set status = 'active'");
        await query("delete from ad_account_connections where external_account_id = '990'");
        return stateIn(query);
      });
      const moved = await v.cli(['apps', 'update', 'microsoft-app', '--client-id', 'another-client']);
      expect(moved.code, moved.stderr).toBe(7);
      expect(moved.stderr).toContain(`hold tokens issued to client id ${app.clientId}`);
      expect(moved.stderr).toContain('--force');
      expect(await vaultState(v)).toBe(state);

      expect((await v.cli(['apps', 'disable', 'microsoft-app'])).code).toBe(0);
      writeFileSync(file, env('987,988,989'));
      const before = await vaultState(v);
      const refused = await v.cli(['import', 'env', '--file', file]);
      expect(refused.code, refused.stderr).toBe(7);
      expect(refused.stderr).toContain('is disabled');
      expect(refused.stderr).toContain('credvault apps enable microsoft_ads/microsoft-app');
      expect(await vaultState(v)).toBe(before);
      const forced = await v.json<{ client_id: string }>([
        'apps',
        'update',
        'microsoft-app',
        '--client-id',
        'another-client',
        '--force',
      ]);
      expect(forced.client_id).toBe('another-client');
      // Committed, not only read back inside the update's transaction.
      expect(
        await v.sql("select client_id from oauth_app_credentials where label = 'microsoft-app'"),
      ).toEqual([{ client_id: 'another-client' }]);
    },
  );

  it.runIf(ONCE)(
    'a dry run lists no connection ids (none exist), and refuses --verify, which would refresh',
    async () => {
      const v = await vault();
      const { env } = await microsoftSetup(v);
      const file = join(v.root, '.env');
      writeFileSync(file, env('987,988'));
      const before = await vaultState(v);
      const dry = await v.json<ImportJson>(['import', 'env', '--file', file, '--dry-run']);
      expect(dry.applied).toBe(false);
      expect(dry.plan.filter((p) => p.action === 'create').map((p) => p.target)).toEqual(['987', '988']);
      expect(dry.connections).toEqual([]);
      expect(dry.verify).toBeNull();

      expect(await vaultState(v)).toBe(before);

      // Refused before anything is read or written: not even the plan's audit record.
      const dump = await v.dump();
      const refreshes = doubles.microsoft.refreshAttempts;
      const verify = await v.cli(['import', 'env', '--file', file, '--dry-run', '--verify', '--json']);
      expect(verify.code).toBe(2);
      expect(verify.stdout).toBe('');
      expect(JSON.parse(verify.stderr).error.message).toContain(
        '--verify does not go with --dry-run: verifying refreshes each connection at the platform',
      );
      expect(doubles.microsoft.refreshAttempts).toBe(refreshes);
      expect(await v.dump()).toBe(dump);
    },
  );

  it.runIf(ONCE)('says when a connection moves to another app (a file of another OAuth client)', async () => {
    const { v, app, file } = await googleEnv('1234567890');
    expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
    // The staging client's .env, for the same account.
    const staging = doubles.google.registerClient({
      clientId: `staging-${Date.now()}.apps.googleusercontent.com`,
      clientSecret: 'staging-secret',
      redirectUris: ['http://127.0.0.1/callback'],
      public: false,
    });
    const second = doubles.google.issueGrant({ clientId: staging.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const other = join(v.root, 'staging.env');
    writeFileSync(
      other,
      `GOOGLE_ADS_CLIENT_ID=${staging.clientId}\nGOOGLE_ADS_CLIENT_SECRET=staging-secret\nGOOGLE_ADS_REFRESH_TOKEN=${second.refreshToken}\nGOOGLE_ADS_CUSTOMER_ID=1234567890\n`,
    );
    const plan = await v.json<ImportJson>(['import', 'env', '--file', other, '--dry-run']);
    expect(plan.plan.find((p) => p.kind === 'connection')).toEqual({
      kind: 'connection',
      platform: 'google_ads',
      target: '1234567890',
      action: 'update',
      detail: `new refresh token, app imported (was ${app.label})`,
    });
    // Applied: the grant the file's token replaces is destroyed here, on record and said (the
    // platform is not told: on Google that would end the file's grant too).
    const [old] = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    const applied = await v.cli(['import', 'env', '--file', other]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stderr).toContain(
      'the previous tokens of google_ads:1234567890 were destroyed here (the new grant replaces them); they were not revoked at the platform',
    );
    expect(
      await v.sql(
        "select target_id, detail->>'via' as via from credential_access_audit where action = 'token.destroy'",
      ),
    ).toEqual([{ target_id: old!.id, via: 'import' }]);
    expect(await v.sql('select id from oauth_tokens_vault where id = $1', [old!.id])).toEqual([]);
  });

  it.runIf(ONCE)(
    'keeps a grant that connections add made: importing the old .env again does not shred it',
    async () => {
      const { v, app, first, file } = await googleEnv('1234567890,1234567891');
      expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
      // Google refuses the imported token; a person adopts a new one for one of the two accounts.
      doubles.google.revokeGrant(first.grantId);
      const refused = await v.cli(['connections', 'refresh', 'google_ads:1234567890']);
      expect(refused.code, refused.stderr).toBe(4);
      const second = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      await adoptGrant(v, 'google_ads', app.label, second.refreshToken, { accounts: ['1234567890'] });

      // The deploy script imports the same file again: the adopted grant stays, and the plan says how
      // to replace it on purpose; the other account still holds the refused imported token.
      const state = await vaultState(v);
      const again = await v.cli(['import', 'env', '--file', file]);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(
        /skip\s+connection\s+google_ads\s+1234567890\s+kept: connected with connect/,
      );
      expect(again.stdout).toContain(
        `credvault connections add google_ads --app ${app.label} --account 1234567890 --refresh-token-file FILE`,
      );
      expect(again.stdout).toMatch(/unchanged\s+connection\s+google_ads\s+1234567891\s+.*needs_reauth/);
      expect(again.stderr).toContain('nothing to change; 1 skipped');
      expect(await vaultState(v)).toBe(state);
      const token = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
      expect(token.code, token.stderr).toBe(0);

      // Under --json: the same, and no connection listed as changed.
      const report = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(report.plan.find((p) => p.target === '1234567890')).toMatchObject({ action: 'skip' });
      expect(report.connections).toEqual([]);

      // A revoked connection holds no token: an import does not revive it either.
      expect((await v.cli(['connections', 'revoke', 'google_ads:1234567890'])).code).toBe(0);
      const revoked = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(revoked.plan.find((p) => p.target === '1234567890')).toMatchObject({ action: 'skip' });
      expect(revoked.plan.find((p) => p.target === '1234567890')!.detail).toContain('kept revoked');
      expect(
        (await v.json<{ status: string }>(['connections', 'show', 'google_ads:1234567890'])).status,
      ).toBe('revoked');
      await expectNoSecretsLeaked(v, [first.refreshToken, second.refreshToken, app.clientSecret]);
    },
  );

  it.runIf(ONCE)(
    'a changed customer id or login customer id reaches the connection when the token is unchanged',
    async () => {
      const v = await vault();
      const { env } = await microsoftSetup(v);
      const file = join(v.root, '.env');
      writeFileSync(file, env('987'));
      expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
      const envOf = async (ref: string) =>
        (await v.cli(['token', 'get', ref, '--format', 'env'], { secretOutput: true })).stdout;
      expect(await envOf('microsoft_ads:987')).toContain('MICROSOFT_ADS_CUSTOMER_ID=555\n');
      // token get refreshed: Microsoft rotated the refresh token, and the file still holds the first.
      writeFileSync(file, env('987').replace('CUSTOMER_ID=555', 'CUSTOMER_ID=789'));
      const changed = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(changed.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app microsoft-app',
        'update connection 987',
      ]);
      expect(changed.plan[1]!.detail).toBe('app microsoft-app, customer id 789 (was 555)');
      expect(changed.connections).toHaveLength(1);
      expect(await envOf('microsoft_ads:987')).toContain('MICROSOFT_ADS_CUSTOMER_ID=789\n');
      const again = await v.cli(['import', 'env', '--file', file]);
      expect(again.stderr).toContain('nothing to change');
      expect(await auditActions(v)).toContain('connection.update');

      // Google: the login customer id is the connection's (the app's is left as it is).
      const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
      const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      const google = (manager: string) =>
        `GOOGLE_ADS_CLIENT_ID=${app.clientId}\nGOOGLE_ADS_REFRESH_TOKEN=${grant.refreshToken}\nGOOGLE_ADS_LOGIN_CUSTOMER_ID=${manager}\nGOOGLE_ADS_CUSTOMER_ID=1234567890\n`;
      writeFileSync(file, google('111-222-3333'));
      expect((await v.cli(['import', 'env', '--file', file])).code).toBe(0);
      writeFileSync(file, google('222-333-4444'));
      const manager = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(manager.plan.map((p) => `${p.action} ${p.kind} ${p.detail}`)).toEqual([
        `unchanged app client id ${app.clientId}`,
        'update connection app google-app, login customer id 2223334444 (was 1112223333)',
      ]);
      expect(await envOf('google_ads:1234567890')).toContain('GOOGLE_ADS_LOGIN_CUSTOMER_ID=2223334444\n');
    },
  );

  it.runIf(ONCE)(
    "one file's login customer id does not reach another file's accounts, granted directly",
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
      // Two consents of the one OAuth client: one granted the account directly (its file names no
      // manager, and the official client sends no login-customer-id), the other reaches another
      // account through a manager its file names.
      const direct = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      const other = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      const directFile = join(v.root, 'direct.env');
      const otherFile = join(v.root, 'other.env');
      writeFileSync(
        directFile,
        `GOOGLE_ADS_CLIENT_ID=${app.clientId}\nGOOGLE_ADS_REFRESH_TOKEN=${direct.refreshToken}\nGOOGLE_ADS_CUSTOMER_ID=1234567890\n`,
      );
      writeFileSync(
        otherFile,
        `GOOGLE_ADS_CLIENT_ID=${app.clientId}\nGOOGLE_ADS_REFRESH_TOKEN=${other.refreshToken}\nGOOGLE_ADS_LOGIN_CUSTOMER_ID=5556667778\nGOOGLE_ADS_CUSTOMER_ID=2345678901\n`,
      );
      expect((await v.cli(['import', 'env', '--file', directFile])).code).toBe(0);
      const second = await v.json<ImportJson>(['import', 'env', '--file', otherFile]);
      expect(second.plan.map((p) => `${p.action} ${p.kind} ${p.target} ${p.detail}`)).toEqual([
        `unchanged app ${app.label} client id ${app.clientId}`,
        `create connection 2345678901 app ${app.label}`,
      ]);
      // The first file's account is called as that file's client would call it: no login-customer-id.
      const env = await v.cli(['token', 'get', 'google_ads:1234567890', '--format', 'env'], {
        secretOutput: true,
      });
      expect(env.code, env.stderr).toBe(0);
      expect(env.stdout).not.toContain('GOOGLE_ADS_LOGIN_CUSTOMER_ID');
      const campaigns = await v.cli(['campaigns', 'list', 'google_ads:1234567890', '--json']);
      expect(campaigns.code, campaigns.stderr).toBe(0);
      // Each file again, in turn: nothing changes.
      for (const file of [directFile, otherFile]) {
        const again = await v.cli(['import', 'env', '--file', file]);
        expect(again.code, again.stderr).toBe(0);
        expect(again.stderr).toContain('nothing to change');
      }
      // The second file without its manager: its account is reached directly from now on.
      writeFileSync(
        otherFile,
        readFileSync(otherFile, 'utf8').replace(/^GOOGLE_ADS_LOGIN_CUSTOMER_ID=.*\n/m, ''),
      );
      const direct2 = await v.json<ImportJson>(['import', 'env', '--file', otherFile]);
      expect(direct2.plan.map((p) => `${p.action} ${p.kind} ${p.target} ${p.detail}`)).toEqual([
        `unchanged app ${app.label} client id ${app.clientId}`,
        `update connection 2345678901 app ${app.label}, reached directly, no login customer id (was login customer id 5556667778)`,
      ]);
      const env2 = await v.cli(['token', 'get', 'google_ads:2345678901', '--format', 'env'], {
        secretOutput: true,
      });
      expect(env2.code, env2.stderr).toBe(0);
      expect(env2.stdout).not.toContain('GOOGLE_ADS_LOGIN_CUSTOMER_ID');
    },
  );

  it.runIf(ONCE)(
    'imports a LinkedIn access token without a refresh token and verifies it by listing accounts',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'linkedin_ads', doubleFor('linkedin_ads'));
      const grant = doubles.linkedin.issueGrant({ clientId: app.clientId, scope: 'r_ads rw_ads' } as never);
      const file = join(v.root, '.env');
      writeFileSync(
        file,
        `LINKEDIN_ADS_CLIENT_ID=${app.clientId}\nLINKEDIN_ADS_CLIENT_SECRET=${app.clientSecret}\nLINKEDIN_ADS_ACCESS_TOKEN=${grant.accessToken}\nLINKEDIN_ADS_AD_ACCOUNT_ID=5101\n`,
      );
      const report = await v.json<ImportJson>(['import', 'env', '--file', file, '--verify']);
      expect(report.plan.find((p) => p.kind === 'connection')!.detail).toContain('access token only');
      expect(report.verify).toEqual([expect.objectContaining({ connection: 'linkedin_ads:5101', ok: true })]);
      const token = await v.cli(['token', 'get', 'linkedin_ads:5101'], { secretOutput: true });
      expect(token.stdout.trim()).toBe(grant.accessToken);
    },
  );

  it.runIf(ONCE)('reports a broken line by its number and writes nothing', async () => {
    const v = await vault();
    const file = join(v.root, '.env');
    const secret = fakeSecret('s');
    writeFileSync(
      file,
      `GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n# a comment\nGOOGLE_ADS_CLIENT_SECRET ${secret}\nGOOGLE_ADS_REFRESH_TOKEN=${fakeSecret('r')}\n`,
    );
    const before = await v.dump();
    const result = await v.cli(['import', 'env', '--file', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('line 3 is not an assignment');
    expect(result.stderr).toContain('nothing was imported');
    // The secret on the broken line is not echoed back.
    expect(result.stderr).not.toMatch(/s-[0-9a-f]{24}/);
    expect(result.stderr).not.toContain(secret.slice(0, 6));
    expect(await v.dump()).toBe(before);
  });

  it.runIf(ONCE)(
    'refuses a secret alone on a line without echoing it, a name set twice, and an unclosed quote',
    async () => {
      const v = await vault();
      const file = join(v.root, '.env');
      const secret = `GOCSPX-${fakeSecret('w').slice(2)}`;
      const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
      const tail = 'GOOGLE_ADS_LOGIN_CUSTOMER_ID=1234567890\n';
      const cases: Array<[string, string]> = [
        // A value pasted (or wrapped) onto a line of its own: the line is all secret.
        [
          `${head}GOOGLE_ADS_CLIENT_SECRET=\n${secret}\n${tail}`,
          'line 3 is not an assignment (NAME=value)\n',
        ],
        [`${head}${secret} # prod\n${tail}`, 'line 2 is not an assignment (NAME=value)\n'],
        // Two accounts' tokens in one file: dotenv would keep the last without a word.
        [
          `${head}GOOGLE_ADS_REFRESH_TOKEN=${fakeSecret('r')}\nGOOGLE_ADS_REFRESH_TOKEN=${fakeSecret('q')}\n`,
          'line 3 sets GOOGLE_ADS_REFRESH_TOKEN again (first on line 2)',
        ],
        // dotenv would keep the quote in the stored token.
        [
          `${head}GOOGLE_ADS_REFRESH_TOKEN="${fakeSecret('r')}\n`,
          'line 2 opens a quote in the value of GOOGLE_ADS_REFRESH_TOKEN',
        ],
      ];
      // A name credvault does not read may be set twice: which one wins is not its business.
      writeFileSync(
        file,
        `DEBUG=1\n${head}DEBUG=2\nGOOGLE_ADS_CLIENT_SECRET=${fakeSecret('cs')}\nGOOGLE_ADS_LOGIN_CUSTOMER_ID=123-456-7890\n`,
      );
      const debug = await v.cli(['import', 'env', '--file', file, '--dry-run']);
      expect(debug.code, debug.stderr).toBe(0);
      // Not an account: a Google Ads customer id is ten digits.
      writeFileSync(
        file,
        `${head}GOOGLE_ADS_REFRESH_TOKEN=${fakeSecret('r')}\nGOOGLE_ADS_CUSTOMER_ID=1234567890,true\n`,
      );
      const notId = await v.cli(['import', 'env', '--file', file, '--dry-run']);
      expect(notId.code).toBe(2);
      expect(notId.stderr).toContain(
        'line 3: GOOGLE_ADS_CUSTOMER_ID is not a Google Ads customer id (10 digits, dashes allowed)',
      );
      const before = await v.dump();
      for (const [text, message] of cases) {
        writeFileSync(file, text);
        const result = await v.cli(['import', 'env', '--file', file, '--json']);
        expect(result.code, result.stderr).toBe(2);
        expect(JSON.parse(result.stderr).error.message).toContain(message.trim());
        expect(result.stderr).not.toContain(secret.slice(0, 12));
      }
      expect(await v.dump()).toBe(before);
    },
  );

  it.runIf(ONCE)(
    'refuses a # that dotenv would cut a value at, and a $VARIABLE it would store as written',
    async () => {
      const v = await vault();
      const file = join(v.root, '.env');
      const head = `GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\nGOOGLE_ADS_CLIENT_SECRET=${fakeSecret('cs')}\n`;
      const tail = fakeSecret('tail').slice(2, 14);
      const cases: Array<[string, string]> = [
        // dotenv keeps "dev"; bash keeps the whole value.
        [
          `GOOGLE_ADS_DEVELOPER_TOKEN=dev#${tail}`,
          'line 3 has a "#" in the value of GOOGLE_ADS_DEVELOPER_TOKEN',
        ],
        [
          `export GOOGLE_ADS_DEVELOPER_TOKEN=#${tail}`,
          'line 3 has a "#" in the value of GOOGLE_ADS_DEVELOPER_TOKEN',
        ],
        [
          `GOOGLE_ADS_DEVELOPER_TOKEN=\${DEV_TOKEN}`,
          'line 3 refers to another variable or a command in the value of GOOGLE_ADS_DEVELOPER_TOKEN',
        ],
        [`GOOGLE_ADS_DEVELOPER_TOKEN="$DEV${tail}"`, 'line 3 refers to another variable'],
        [`GOOGLE_ADS_DEVELOPER_TOKEN=$(pass ads/${tail})`, 'line 3 refers to another variable'],
      ];
      const before = await v.dump();
      for (const [line, message] of cases) {
        writeFileSync(file, `${head}${line}\n`);
        const result = await v.cli(['import', 'env', '--file', file, '--dry-run', '--json']);
        expect(result.code, result.stderr).toBe(2);
        const error = JSON.parse(result.stderr).error;
        expect(error.message).toContain(message);
        expect(`${error.message} ${error.hint ?? ''}`).toMatch(/[Qq]uote|single-quote/);
        expect(result.stderr).not.toContain(tail);
      }
      expect(await v.dump()).toBe(before);

      // Quoted, or a comment after a space, reads the same in both; other programs' variables are
      // not credvault's business.
      writeFileSync(
        file,
        `${head}GOOGLE_ADS_DEVELOPER_TOKEN='dev#${tail}'  # quoted\nGOOGLE_ADS_REDIRECT_URI=http://localhost:8080/cb #comment\nDEBUG=a#b\nPGPASSWORD=\${SECRET}\n`,
      );
      const quoted = await v.cli(['import', 'env', '--file', file]);
      expect(quoted.code, quoted.stderr).toBe(0);
      // The whole value was stored: the same value double-quoted is unchanged, the cut one is not.
      writeFileSync(file, `${head}GOOGLE_ADS_DEVELOPER_TOKEN="dev#${tail}"\n`);
      const same = await v.json<ImportJson>(['import', 'env', '--file', file, '--dry-run']);
      expect(same.plan.map((p) => p.action)).toEqual(['unchanged']);
      writeFileSync(file, `${head}GOOGLE_ADS_DEVELOPER_TOKEN=dev # ${tail}\n`);
      const cut = await v.json<ImportJson>(['import', 'env', '--file', file, '--dry-run']);
      expect(cut.plan.map((p) => `${p.action} ${p.detail}`)).toEqual(['update developer token']);
    },
  );

  it.runIf(ONCE)('imports the rest of a file whose Google settings are for a service account', async () => {
    const v = await vault();
    const { env } = await microsoftSetup(v);
    const file = join(v.root, '.env');
    writeFileSync(
      file,
      `# Google Ads via a service account\nGOOGLE_ADS_DEVELOPER_TOKEN=${fakeSecret('dt')}\nGOOGLE_ADS_JSON_KEY_FILE_PATH=/secrets/sa.json\nGOOGLE_ADS_IMPERSONATED_EMAIL=ads@example.com\nGOOGLE_ADS_LOGIN_CUSTOMER_ID=1112223333\n${env('987')}`,
    );
    const report = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(report.plan.map((p) => `${p.action} ${p.kind} ${p.platform} ${p.target}`)).toEqual([
      'skip app google_ads -',
      'unchanged app microsoft_ads microsoft-app',
      'create connection microsoft_ads 987',
    ]);
    expect(report.plan[0]!.detail).toContain(
      'GOOGLE_ADS_DEVELOPER_TOKEN, GOOGLE_ADS_LOGIN_CUSTOMER_ID not imported: they go with Google service-account authentication',
    );
    expect(report.plan[0]!.detail).toContain('add GOOGLE_ADS_CLIENT_ID');
    expect(report.unsupported).toEqual(['GOOGLE_ADS_IMPERSONATED_EMAIL', 'GOOGLE_ADS_JSON_KEY_FILE_PATH']);
    expect(await v.json<unknown[]>(['apps', 'list', '--platform', 'google_ads'])).toEqual([]);
    const human = await v.cli(['import', 'env', '--file', file]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/skip\s+app\s+google_ads/);
    expect(human.stderr).toContain(
      'not imported, service-account settings (credvault keeps OAuth grants only): GOOGLE_ADS_IMPERSONATED_EMAIL, GOOGLE_ADS_JSON_KEY_FILE_PATH',
    );
    expect(human.stderr).toContain('nothing to change; 1 skipped');
  });

  it.runIf(ONCE)('lists unknown variables and refuses a file with no credentials it knows', async () => {
    const v = await vault();
    const file = join(v.root, '.env');
    writeFileSync(file, 'FACEBOOK_ACCESS_TOKEN=xyz\nTIKTOK_APP_ID=1\n');
    const result = await v.cli(['import', 'env', '--file', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('holds no ad platform credentials credvault recognises');
    expect(result.stderr).toContain('Unknown variables: FACEBOOK_ACCESS_TOKEN, TIKTOK_APP_ID');

    // Among known ones they are listed, not guessed at: GOOGLE_ADS_CUSTOMERID is not CUSTOMER_ID.
    writeFileSync(
      file,
      `GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\nGOOGLE_ADS_CLIENT_SECRET=${fakeSecret('cs')}\nGOOGLE_ADS_DEVELOPER_TOKEN=${fakeSecret('dt')}\nGOOGLE_ADS_CUSTOMERID=1234567890\nREDDIT_USERNAME=someone\n`,
    );
    const listed = await v.cli(['import', 'env', '--file', file]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stderr).toContain(
      'not imported, unknown to credvault: GOOGLE_ADS_CUSTOMERID, REDDIT_USERNAME',
    );
    expect(listed.stdout).toMatch(/create\s+app\s+google_ads\s+imported/);
  });

  it.runIf(ONCE)('refuses variables that disagree, and a new app without what apps add needs', async () => {
    const v = await vault();
    const file = join(v.root, '.env');
    writeFileSync(file, 'LINKEDIN_CLIENT_ID=one\nLINKEDIN_ADS_CLIENT_ID=two\n');
    const clash = await v.cli(['import', 'env', '--file', file]);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain(
      `${file}: LINKEDIN_CLIENT_ID (line 1) and LINKEDIN_ADS_CLIENT_ID (line 2) disagree`,
    );

    // A new app needs what `apps add` needs, asked for by the file's own names.
    writeFileSync(
      file,
      `REDDIT_CLIENT_ID=abc\nREDDIT_CLIENT_SECRET=def\nREDDIT_REFRESH_TOKEN=${fakeSecret('r')}\n`,
    );
    const noRedirect = await v.cli(['import', 'env', '--file', file]);
    expect(noRedirect.code).toBe(2);
    expect(noRedirect.stderr).toContain('Reddit Ads: no redirect URI for the new app');
    expect(noRedirect.stderr).toContain('Add REDDIT_REDIRECT_URI');
  });

  it.runIf(ONCE)(
    'refuses a file whose client id is that of two apps, naming them, rather than picking one and changing its secret',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
      // One OAuth client, a second app for another manager (apps add allows it), with its own secret.
      const other = fakeSecret('GOCSPX');
      await addAppFor(v, 'google_ads', doubleFor('google_ads'), {
        label: 'mcc-b',
        extra: { client_secret: other, login_customer_id: '111-222-3334' },
      });
      const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      const file = join(v.root, '.env');
      writeFileSync(
        file,
        `GOOGLE_ADS_CLIENT_ID=${app.clientId}\nGOOGLE_ADS_CLIENT_SECRET=${other}\nGOOGLE_ADS_REFRESH_TOKEN=${grant.refreshToken}\nGOOGLE_ADS_CUSTOMER_ID=1234567890\n`,
      );
      const before = await stateAndAudit(v);
      for (const args of [['--dry-run'], []]) {
        const run = await v.cli(['import', 'env', '--file', file, ...args]);
        expect(run.code, run.stderr).toBe(2);
        expect(run.stderr).toContain(
          `Google Ads: the file's client id ${app.clientId} is the client id of 2 apps (google_ads/google-app, google_ads/mcc-b), and the file does not say which one it is for`,
        );
        expect(run.stderr).toContain('credvault connections add google_ads --app APP');
        expect(`${run.stdout}${run.stderr}`).not.toContain(other);
        expect(`${run.stdout}${run.stderr}`).not.toContain(grant.refreshToken);
      }
      expect(await stateAndAudit(v)).toEqual(before);
    },
  );

  // On both databases: the import's transaction is undone.
  it('refuses a refresh token that names no account, leaving no app behind', async () => {
    const v = await vault();
    const file = join(v.root, '.env');
    // A user agent left unquoted, spaces and all, as .env files often have it: free text, taken.
    writeFileSync(
      file,
      `REDDIT_CLIENT_ID=abc\nREDDIT_CLIENT_SECRET=def\nREDDIT_REDIRECT_URI=http://localhost:8080/callback\nREDDIT_USER_AGENT=web:acme-ads:v1 (by /u/acme)\nREDDIT_REFRESH_TOKEN=${fakeSecret('r')}\n`,
    );
    const before = await v.dump();
    const noAccount = await v.cli(['import', 'env', '--file', file]);
    expect(noAccount.code).toBe(2);
    expect(noAccount.stderr).toContain('REDDIT_REFRESH_TOKEN names no account to connect');
    expect(noAccount.stderr).toContain('REDDIT_AD_ACCOUNT_ID');
    // The app it would have made first is not left behind: one transaction.
    expect(await v.dump()).toBe(before);
  });
});

// Reading google-ads.yaml and writing it back: what the file says, not how the database keeps it
// (the same statements as import env's, which runs on both).
describe.runIf(ONCE)('import google-ads-yaml', () => {
  it('round-trips: google-ads.yaml in, token get --format google-ads-yaml out, in again unchanged', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const file = join(v.root, 'google-ads.yaml');
    // As the official client's template has it (comments, use_proto_plus, a number for the id).
    writeFileSync(
      file,
      `# google-ads.yaml
developer_token: ${app.developerToken}
use_proto_plus: True
client_id: ${app.clientId}
client_secret: ${app.clientSecret}
refresh_token: ${grant.refreshToken}
login_customer_id: 1112223333
logging:
  version: 1
  disable_existing_loggers: False
`,
    );
    const report = await v.json<ImportJson>(['import', 'google-ads-yaml', file]);
    expect(report.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      // The login customer id is the connection's (exported below), not the app's.
      'unchanged app google-app',
      'create connection 1112223333',
    ]);
    expect(report.ignored).toEqual(['use_proto_plus']);
    expect(report.unknown).toEqual([]);

    const out = await v.cli(['token', 'get', 'google_ads:1112223333', '--format', 'google-ads-yaml'], {
      secretOutput: true,
    });
    expect(out.code, out.stderr).toBe(0);
    const yaml = parseYaml(out.stdout) as Record<string, unknown>;
    expect(yaml).toMatchObject({
      developer_token: app.developerToken,
      client_id: app.clientId,
      client_secret: app.clientSecret,
      refresh_token: grant.refreshToken,
      use_proto_plus: true,
    });
    expect(String(yaml.login_customer_id)).toBe('1112223333');

    const exported = join(v.root, 'exported.yaml');
    writeFileSync(exported, out.stdout);
    const again = await v.json<ImportJson>(['import', 'google-ads-yaml', exported]);
    expect(again.plan.map((p) => p.action)).toEqual(['unchanged', 'unchanged']);
  });

  it('a Google app without a developer token exports a placeholder for it, read back as none', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'), {
      extra: { developer_token: undefined },
    });
    const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: ['1234567890'] });
    const placeholder = 'NONE-developer-token-optional-since-2026-09';
    // google-ads-python refuses a configuration without developer_token.
    const out = await v.cli(['token', 'get', 'google_ads:1234567890', '--format', 'google-ads-yaml'], {
      secretOutput: true,
    });
    expect(out.code, out.stderr).toBe(0);
    expect(parseYaml(out.stdout)).toMatchObject({ developer_token: placeholder, use_proto_plus: true });
    const env = await v.cli(['token', 'get', 'google_ads:1234567890', '--format', 'env'], {
      secretOutput: true,
    });
    expect(env.code, env.stderr).toBe(0);
    expect(env.stdout).toMatch(new RegExp(`^(export )?GOOGLE_ADS_DEVELOPER_TOKEN='?${placeholder}'?$`, 'm'));
    const exported = join(v.root, 'exported.yaml');
    writeFileSync(exported, `${out.stdout}customer_id: 1234567890\n`);
    const again = await v.json<ImportJson>(['import', 'google-ads-yaml', exported, '--dry-run']);
    expect(again.ignored).toContain('developer_token');
    expect(again.plan[0]).toMatchObject({ kind: 'app', action: 'unchanged' });
  });

  it('reports invalid YAML with its line, and service-account settings as unsupported', async () => {
    const v = await vault();
    const file = join(v.root, 'google-ads.yaml');
    writeFileSync(file, 'client_id: abc\nclient_secret: [unclosed\nrefresh_token: x\n');
    const broken = await v.cli(['import', 'google-ads-yaml', file]);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/google-ads\.yaml line \d is not valid YAML/);

    writeFileSync(
      file,
      'developer_token: abc\nuse_proto_plus: True\njson_key_file_path: /secrets/sa.json\nimpersonated_email: ops@example.com\nlogin_customer_id: 1234567890\n',
    );
    const sa = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(sa.code).toBe(2);
    expect(sa.stderr).toContain(
      'uses Google service-account authentication (impersonated_email, json_key_file_path), which credvault does not keep',
    );
    expect(sa.stderr).toContain('credvault connect google_ads');

    // Beside an OAuth client they are listed as not imported.
    writeFileSync(
      file,
      `client_id: x.apps.googleusercontent.com\nclient_secret: ${fakeSecret('cs')}\ndeveloper_token: ${fakeSecret('dt')}\njson_key_file_path: /secrets/sa.json\n`,
    );
    const both = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(both.code, both.stderr).toBe(0);
    expect(both.stderr).toContain(
      'not imported, service-account settings (credvault keeps OAuth grants only): json_key_file_path',
    );
    expect(both.stdout).toMatch(/create\s+app\s+google_ads\s+imported/);
  });

  it('reports a YAML problem by position and kind, never with the line that may hold a secret', async () => {
    const v = await vault();
    const file = join(v.root, 'google-ads.yaml');
    const secret = `GOCSPX-${fakeSecret('ys').slice(2)}`;
    const cases: Array<[string, string]> = [
      // To the YAML library, * starts an alias, ! a tag and & an anchor: its own messages quote the
      // secret, and an anchor alone leaves the key without a value.
      [
        `client_id: a\nclient_secret: *${secret}\n`,
        'line 2 is not valid YAML (column 16: an alias (*name) that cannot be resolved)',
      ],
      [
        `client_id: a\nclient_secret: !${secret} x\n`,
        'line 2 is not valid YAML (column 16: an unknown tag (!name))',
      ],
      [`client_id: a\nclient_secret: &${secret}\n`, 'an anchor (&name) with no value)'],
      [
        `client_id: a\nclient_secret: ${secret}\nclient_secret: ${secret}\n`,
        'line 3 is not valid YAML (column 1: a key set twice)',
      ],
    ];
    for (const [text, message] of cases) {
      writeFileSync(file, text);
      const human = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
      expect(human.code).toBe(2);
      expect(human.stderr).toContain(message);
      expect(human.stderr).not.toContain('Warning');
      const json = await v.cli(['import', 'google-ads-yaml', file, '--dry-run', '--json']);
      expect(json.code).toBe(2);
      // One JSON document on stderr, nothing else.
      expect(JSON.parse(json.stderr).error.message).toContain(message);
      for (const out of [human.stderr, human.stdout, json.stderr, json.stdout]) {
        expect(out).not.toContain(secret.slice(7, 19));
      }
    }

    // Messages name the keys the file uses, not the variables of a .env.
    writeFileSync(
      file,
      `client_id: x.apps.googleusercontent.com\nclient_secret: ${fakeSecret('cs')}\nrefresh_token: ${fakeSecret('rt')}\n`,
    );
    const noAccount = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(noAccount.code).toBe(2);
    expect(noAccount.stderr).toContain('refresh_token names no account to connect');
    expect(noAccount.stderr).toContain('Add customer_id');
    expect(noAccount.stderr).not.toContain('GOOGLE_ADS_');
    writeFileSync(file, `client_id: x.apps.googleusercontent.com\ncustomer_id: 12345\n`);
    const notId = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(notId.stderr).toContain('line 2: customer_id is not a Google Ads customer id');
    expect(notId.stderr).not.toContain('12345');
  });

  it('takes customer_id as a YAML list, and a value still the template placeholder as not set', async () => {
    const v = await vault();
    const file = join(v.root, 'google-ads.yaml');
    const base = `client_id: x.apps.googleusercontent.com\nclient_secret: ${fakeSecret('cs')}\nrefresh_token: ${fakeSecret('rt')}\nlogin_customer_id: 1112223333\n`;
    writeFileSync(
      file,
      `${base}developer_token: INSERT_DEVELOPER_TOKEN_HERE\ncustomer_id:\n  - 1234567890\n  - 123-456-7891\n`,
    );
    const listed = await v.json<ImportJson>(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(listed.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      'create app imported',
      'create connection 1234567890',
      'create connection 1234567891',
    ]);
    expect(listed.unknown).toEqual([]);
    // A developer token of digits only, quoted (unquoted, YAML reads it as a number: refused, see
    // test/cli/bad-input.test.ts), keeps every digit.
    writeFileSync(file, `${base}developer_token: "123456789012345678901234"\ncustomer_id: 1234567890\n`);
    expect((await v.json<ImportJson>(['import', 'google-ads-yaml', file])).plan.map((p) => p.action)).toEqual(
      ['create', 'create'],
    );
    // The same settings as a .env (strings there): the stored token is the same, digit for digit.
    const env = join(v.root, '.env');
    const yaml = parseYaml(readFileSync(file, 'utf8')) as Record<string, string>;
    writeFileSync(
      env,
      `GOOGLE_ADS_CLIENT_ID=${yaml.client_id}\nGOOGLE_ADS_CLIENT_SECRET=${yaml.client_secret}\nGOOGLE_ADS_DEVELOPER_TOKEN=123456789012345678901234\n`,
    );
    const same = await v.json<ImportJson>(['import', 'env', '--file', env, '--dry-run']);
    expect(same.plan.map((p) => `${p.action} ${p.kind}`)).toEqual(['unchanged app']);
    // Not the login customer id in its place: a customer_id that is not ids is refused.
    writeFileSync(file, `${base}customer_id:\n  prod: 1234567890\n`);
    const nested = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(nested.code).toBe(2);
    expect(nested.stderr).toContain('customer_id is neither an account id nor a list of them');
  });

  it('resolves a YAML merge key (<<: *defaults), as the official client reads the file', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const file = join(v.root, 'google-ads.yaml');
    // Shared settings under an anchor, merged in; a key of the file's own wins over a merged one.
    writeFileSync(
      file,
      `defaults: &d\n  client_id: ${app.clientId}\n  client_secret: other\n  developer_token: ${JSON.stringify(app.developerToken)}\n<<: *d\nclient_secret: ${JSON.stringify(app.clientSecret)}\nrefresh_token: ${grant.refreshToken}\ncustomer_id: 1234567890\n`,
    );
    const merged = await v.json<ImportJson>(['import', 'google-ads-yaml', file]);
    expect(merged.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      `unchanged app ${app.label}`,
      'create connection 1234567890',
    ]);
    expect(merged.unknown).toEqual(['defaults']);
    const out = await v.cli(['token', 'get', 'google_ads:1234567890', '--format', 'google-ads-yaml'], {
      secretOutput: true,
    });
    expect(out.code, out.stderr).toBe(0);
    expect(parseYaml(out.stdout)).toMatchObject({
      client_id: app.clientId,
      client_secret: app.clientSecret,
      developer_token: app.developerToken,
      refresh_token: grant.refreshToken,
    });
    // A merged value is checked as any other, and named by the line that writes it.
    writeFileSync(
      file,
      `defaults: &d\n  client_id: x.apps.googleusercontent.com\n  developer_token: 0x1F\n<<: *d\n`,
    );
    const number = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(number.code).toBe(2);
    expect(number.stderr).toContain('google-ads.yaml line 3: developer_token is a number to YAML');
  });
  describe('reading a file: values are refused by file, line and name, never echoed', () => {
    /** Runs a dry-run import of `text` (written as given: a Buffer for bytes) and returns its JSON error. */
    async function refusal(
      v: TestVault,
      kind: 'env' | 'yaml',
      text: string | Buffer,
    ): Promise<{ message: string; hint: string; stderr: string }> {
      const file = join(v.root, kind === 'env' ? '.env' : 'google-ads.yaml');
      writeFileSync(file, text);
      const args = kind === 'env' ? ['import', 'env', '--file', file] : ['import', 'google-ads-yaml', file];
      const json = await v.cli([...args, '--dry-run', '--json']);
      expect(json.code, json.stderr).toBe(2);
      const { error } = JSON.parse(json.stderr) as { error: { message: string; hint?: string } };
      const human = await v.cli([...args, '--dry-run']);
      expect(human.code, human.stderr).toBe(2);
      // --json puts the hint after the message.
      return {
        message: error.message,
        hint: error.hint ?? error.message,
        stderr: `${json.stderr}\n${human.stderr}`,
      };
    }

    it.runIf(ONCE)('an id that is not one is named by file, line and variable, not quoted', async () => {
      const v = await vault();
      const leak = 'FAKE_RT_SECRETLEAK';
      const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
      const env = await refusal(v, 'env', `${head}GOOGLE_ADS_LOGIN_CUSTOMER_ID=1//${leak}\n`);
      expect(env.message).toContain(
        `${join(v.root, '.env')} line 2: GOOGLE_ADS_LOGIN_CUSTOMER_ID is not a Google Ads customer id (10 digits, dashes allowed)`,
      );
      expect(env.hint).toContain('Fix the value');
      expect(env.stderr).not.toContain(leak);
      // An alias to the developer token where the login customer id goes.
      const yaml = await refusal(
        v,
        'yaml',
        `client_id: x.apps.googleusercontent.com\ndeveloper_token: &dt 1//${leak}\nlogin_customer_id: *dt\n`,
      );
      expect(yaml.message).toContain(
        'google-ads.yaml line 3: login_customer_id is not a Google Ads customer id',
      );
      expect(yaml.stderr).not.toContain(leak);
    });

    it.runIf(ONCE)('Microsoft Advertising ids are digits: an account number is named as one', async () => {
      const v = await vault();
      const head = 'MICROSOFT_ADS_CLIENT_ID=00000000-0000-0000-0000-00000000d0b1\n';
      const number = await refusal(v, 'env', `${head}MICROSOFT_ADS_ACCOUNT_ID=F987WXYZ;X7654321\n`);
      expect(number.message).toContain(
        'line 2: MICROSOFT_ADS_ACCOUNT_ID is not a Microsoft Advertising account id',
      );
      expect(number.message).toContain('it looks like the account number');
      expect(number.stderr).not.toContain('F987WXYZ');
      const customer = await refusal(v, 'env', `${head}BING_ADS_CUSTOMER_ID=C-555\n`);
      expect(customer.message).toContain(
        'line 2: BING_ADS_CUSTOMER_ID is not a Microsoft Advertising customer id',
      );
      expect(customer.stderr).not.toContain('C-555');
      // connect --account agrees (the CLI's own argument may be quoted back).
      const connect = await v.cli(['connect', 'microsoft_ads', '--no-browser', '--account', 'F149ABCD']);
      expect(connect.code, connect.stderr).toBe(2);
      expect(connect.stderr).toContain('"F149ABCD" is not a Microsoft Advertising account id');
    });

    it.runIf(ONCE)(
      'refuses backticks, backslashes outside single quotes, and what a shell reads otherwise',
      async () => {
        const v = await vault();
        const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
        const tail = fakeSecret('bt').slice(2, 14);
        const cases: Array<[string, string, RegExp]> = [
          [
            'GOOGLE_ADS_REFRESH_TOKEN=`cat /run/secrets/rt`',
            'line 2 refers to a command in the value of GOOGLE_ADS_REFRESH_TOKEN',
            /single-quote/,
          ],
          ['GOOGLE_ADS_REFRESH_TOKEN="`cat /run/secrets/rt`"', 'line 2 refers to a command', /single-quote/],
          [
            `GOOGLE_ADS_CLIENT_SECRET="ab\\"${tail}"`,
            'line 2 has a backslash in the value of GOOGLE_ADS_CLIENT_SECRET',
            /Single-quote/,
          ],
          [
            `GOOGLE_ADS_CLIENT_SECRET="FAKE\\n${tail}"`,
            'line 2 has a backslash in the value of GOOGLE_ADS_CLIENT_SECRET',
            /Single-quote/,
          ],
          [
            `GOOGLE_ADS_DEVELOPER_TOKEN=ab\\${tail}`,
            'line 2 has a backslash in the value of GOOGLE_ADS_DEVELOPER_TOKEN',
            /Single-quote/,
          ],
        ];
        for (const [line, message, hint] of cases) {
          const refused = await refusal(v, 'env', `${head}${line}\n`);
          expect(refused.message).toContain(message);
          expect(refused.hint).toMatch(hint);
          expect(refused.stderr).not.toContain(tail);
        }
        // Single-quoted, both read it as written; a setting credvault does not take may hold a path.
        const file = join(v.root, '.env');
        writeFileSync(
          file,
          `${head}GOOGLE_ADS_CLIENT_SECRET='ab\\"${tail}'\nGOOGLE_ADS_CONFIGURATION_FILE_PATH=C:\\ads\\google-ads.yaml\n`,
        );
        const quoted = await v.cli(['import', 'env', '--file', file, '--dry-run']);
        expect(quoted.code, quoted.stderr).toBe(0);
      },
    );

    it.runIf(ONCE)('refuses line breaks, control and invisible characters in every credential', async () => {
      const v = await vault();
      const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
      const tail = fakeSecret('cc').slice(2, 14);
      const cases: Array<[string, string]> = [
        [`GOOGLE_ADS_REFRESH_TOKEN="FAKE\n${tail}"`, 'line 2: GOOGLE_ADS_REFRESH_TOKEN holds a line break'],
        [
          `GOOGLE_ADS_CLIENT_SECRET='a\tb${tail}'`,
          'line 2: GOOGLE_ADS_CLIENT_SECRET holds a control character',
        ],
        [
          `GOOGLE_ADS_DEVELOPER_TOKEN="x\u0007${tail}"`,
          'line 2: GOOGLE_ADS_DEVELOPER_TOKEN holds a control character',
        ],
        [
          `LINKEDIN_ACCESS_TOKEN=ab\u200b${tail}`,
          'line 2: LINKEDIN_ACCESS_TOKEN holds an invisible character',
        ],
        [
          `GOOGLE_ADS_REFRESH_TOKEN=ab\uFEFF${tail}`,
          'line 2: GOOGLE_ADS_REFRESH_TOKEN holds an invisible character',
        ],
      ];
      for (const [line, message] of cases) {
        const refused = await refusal(v, 'env', `${head}${line}\n`);
        expect(refused.message).toContain(message);
        expect(refused.stderr).not.toContain(tail);
      }
      // In the client id, named by the file's variable and line (apps add's own words named client_id).
      const id = await refusal(v, 'env', `GOOGLE_ADS_CLIENT_ID="abc\n${tail}"\n`);
      expect(id.message).toContain('.env line 1: GOOGLE_ADS_CLIENT_ID holds a line break');
      expect(id.stderr).not.toContain(tail);
      const yamlCases: Array<[string, string]> = [
        [`refresh_token: "FAKE\\n${tail}"`, 'google-ads.yaml line 2: refresh_token holds a line break'],
        [`client_secret: |\n  FAKE\n  ${tail}`, 'google-ads.yaml line 2: client_secret holds a line break'],
        [`developer_token: "ab\\u200b${tail}"`, 'line 2: developer_token holds an invisible character'],
      ];
      for (const [line, message] of yamlCases) {
        const refused = await refusal(v, 'yaml', `client_id: x.apps.googleusercontent.com\n${line}\n`);
        expect(refused.message).toContain(message);
        expect(refused.stderr).not.toContain(tail);
      }
    });

    it.runIf(ONCE)(
      'refuses what a shell reads otherwise: odd spaces and separators, spaces and quotes, $1 and $$',
      async () => {
        const v = await vault();
        const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
        const tail = fakeSecret('sh').slice(2, 14);
        const cases: Array<[string, string]> = [
          [`GOOGLE_ADS_REFRESH_TOKEN=ab\u2028${tail}`, 'line 2: GOOGLE_ADS_REFRESH_TOKEN holds a line break'],
          [
            `GOOGLE_ADS_REFRESH_TOKEN="ab\u2029${tail}"`,
            'line 2: GOOGLE_ADS_REFRESH_TOKEN holds a line break',
          ],
          [
            `GOOGLE_ADS_CLIENT_SECRET=ab\u00a0${tail}`,
            'line 2: GOOGLE_ADS_CLIENT_SECRET holds a space that is not a plain space',
          ],
          [
            `GOOGLE_ADS_DEVELOPER_TOKEN='ab\u3000${tail}'`,
            'line 2: GOOGLE_ADS_DEVELOPER_TOKEN holds a space that is not a plain space',
          ],
          // dotenv trims it; a shell keeps it.
          [
            `GOOGLE_ADS_DEVELOPER_TOKEN=${tail}\u00a0`,
            'line 2: GOOGLE_ADS_DEVELOPER_TOKEN holds a space that is not a plain space',
          ],
          [
            `GOOGLE_ADS_CLIENT_SECRET=GOCSPX-double ${tail}`,
            'line 2 has a space in the unquoted value of GOOGLE_ADS_CLIENT_SECRET',
          ],
          [
            `GOOGLE_ADS_DEVELOPER_TOKEN="dev" "${tail}"`,
            'line 2 has quotes inside the quoted value of GOOGLE_ADS_DEVELOPER_TOKEN',
          ],
          [
            `GOOGLE_ADS_DEVELOPER_TOKEN=ab'${tail}`,
            'line 2 has a quote inside the unquoted value of GOOGLE_ADS_DEVELOPER_TOKEN',
          ],
          [
            `GOOGLE_ADS_REFRESH_TOKEN=ab$1${tail}`,
            'line 2 refers to another variable or a command in the value of GOOGLE_ADS_REFRESH_TOKEN',
          ],
          [`GOOGLE_ADS_REFRESH_TOKEN="ab$$9${tail}"`, 'line 2 refers to another variable'],
        ];
        for (const [line, message] of cases) {
          const refused = await refusal(v, 'env', `${head}${line}\n`);
          expect(refused.message, line).toContain(message);
          expect(refused.hint).toMatch(/[Qq]uote|Write the value|single-quote/);
          expect(refused.stderr).not.toContain(tail);
        }
        const yaml = await refusal(
          v,
          'yaml',
          `client_id: x.apps.googleusercontent.com\nclient_secret: "ab\\u00a0${tail}"\n`,
        );
        expect(yaml.message).toContain(
          'google-ads.yaml line 2: client_secret holds a space that is not a plain space',
        );
        expect(yaml.stderr).not.toContain(tail);
        // Quoted, a space is the value's; single-quoted, so is a $; a comment after a space is none of it.
        const file = join(v.root, '.env');
        writeFileSync(
          file,
          `${head}GOOGLE_ADS_CLIENT_SECRET="GOCSPX-double ${tail}"\nGOOGLE_ADS_DEVELOPER_TOKEN='ab$1${tail}'   # ok\n`,
        );
        const quoted = await v.cli(['import', 'env', '--file', file, '--dry-run']);
        expect(quoted.code, quoted.stderr).toBe(0);
      },
    );

    it.runIf(ONCE)(
      'refuses shell operators in an unquoted value, text after a closing quote, and spaces inside the quotes',
      async () => {
        const v = await vault();
        const head = 'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\n';
        const tail = fakeSecret('op').slice(2, 14);
        const operator =
          'line 2 has a character a shell reads as its own (; & | ( ) < >) in the unquoted value of';
        const cases: Array<[string, string]> = [
          // dotenv stores S;x, a shell S and runs x.
          [`GOOGLE_ADS_CLIENT_SECRET=S;${tail}`, `${operator} GOOGLE_ADS_CLIENT_SECRET`],
          [`GOOGLE_ADS_CLIENT_SECRET=S&${tail}`, `${operator} GOOGLE_ADS_CLIENT_SECRET`],
          [`GOOGLE_ADS_REFRESH_TOKEN=S|${tail}`, `${operator} GOOGLE_ADS_REFRESH_TOKEN`],
          [`GOOGLE_ADS_DEVELOPER_TOKEN=S(${tail})`, `${operator} GOOGLE_ADS_DEVELOPER_TOKEN`],
          [`GOOGLE_ADS_CLIENT_SECRET=S<${tail}`, `${operator} GOOGLE_ADS_CLIENT_SECRET`],
          [`GOOGLE_ADS_CLIENT_SECRET=S>${tail}`, `${operator} GOOGLE_ADS_CLIENT_SECRET`],
          // dotenv keeps S (the rest is a comment to it), a shell S#….
          [
            `GOOGLE_ADS_CLIENT_SECRET="S"#${tail}`,
            'line 2 has text right after the closing quote of the value of GOOGLE_ADS_CLIENT_SECRET',
          ],
          [
            `GOOGLE_ADS_REFRESH_TOKEN='S'#${tail}`,
            'line 2 has text right after the closing quote of the value of GOOGLE_ADS_REFRESH_TOKEN',
          ],
        ];
        for (const [line, message] of cases) {
          const refused = await refusal(v, 'env', `${head}${line}\n`);
          expect(refused.message, line).toContain(message);
          expect(refused.hint).toMatch(/[Qq]uote/);
          expect(refused.stderr).not.toContain(tail);
        }
        // Both dotenv and a shell keep spaces inside quotes (credvault dropped them): refused, not guessed.
        for (const value of [`"S${tail} "`, `' S${tail}'`]) {
          const refused = await refusal(v, 'env', `${head}GOOGLE_ADS_CLIENT_SECRET=${value}\n`);
          expect(refused.message, value).toContain(
            'line 2: GOOGLE_ADS_CLIENT_SECRET has spaces at the start or end of its quoted value',
          );
          expect(refused.hint).toContain('Remove the spaces inside the quotes');
          expect(refused.stderr).not.toContain(tail);
        }
        const yaml = await refusal(
          v,
          'yaml',
          `client_id: x.apps.googleusercontent.com\nclient_secret: "S${tail} "\n`,
        );
        expect(yaml.message).toContain(
          'google-ads.yaml line 2: client_secret has spaces at the start or end',
        );
        expect(yaml.stderr).not.toContain(tail);
        // Quoted, the operators are the value's; a comment after a space is none of it. (A user agent,
        // free text, keeps its parentheses unquoted: see the test of a refresh token with no account.)
        const file = join(v.root, '.env');
        writeFileSync(file, `${head}GOOGLE_ADS_CLIENT_SECRET="S;&|()<>${tail}" # ok\n`);
        const quoted = await v.cli(['import', 'env', '--file', file, '--dry-run']);
        expect(quoted.code, quoted.stderr).toBe(0);
      },
    );

    it.runIf(ONCE)(
      'refuses a user agent or developer token that cannot go in an HTTP header, by file, line and name',
      async () => {
        const v = await vault();
        const tail = fakeSecret('hd').slice(2, 14);
        const agent = await refusal(
          v,
          'env',
          `REDDIT_ADS_CLIENT_ID=abc\nREDDIT_ADS_USER_AGENT="linux:acme-ads:v1 🚀 (by /u/ops)"\n`,
        );
        expect(agent.message).toContain(
          'line 2: REDDIT_ADS_USER_AGENT holds a character that cannot be sent in an HTTP header (only printable ASCII can',
        );
        expect(agent.hint).toContain('printable ASCII');
        for (const token of [`dev—${tail}`, `dév${tail}`]) {
          const dev = await refusal(
            v,
            'env',
            `GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\nGOOGLE_ADS_DEVELOPER_TOKEN=${token}\n`,
          );
          expect(dev.message).toContain(
            'line 2: GOOGLE_ADS_DEVELOPER_TOKEN holds a character that cannot be sent in an HTTP header',
          );
          expect(dev.stderr).not.toContain(tail);
        }
        const yaml = await refusal(
          v,
          'yaml',
          `client_id: x.apps.googleusercontent.com\ndeveloper_token: "dev–${tail}"\n`,
        );
        expect(yaml.message).toContain(
          'google-ads.yaml line 2: developer_token holds a character that cannot be sent in an HTTP header',
        );
        expect(yaml.stderr).not.toContain(tail);
      },
    );

    it.runIf(ONCE)(
      'a refresh token where a LinkedIn or Reddit account id goes is refused, never stored or shown',
      async () => {
        const v = await vault();
        const app = await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
        const grant = doubles.reddit.issueGrant({
          clientId: app.clientId,
          scope: SCOPES.reddit_ads,
        } as never);
        const file = join(v.root, '.env');
        // The two values swapped: the refresh token where the account id goes.
        writeFileSync(
          file,
          `REDDIT_ADS_CLIENT_ID=${app.clientId}\nREDDIT_ADS_CLIENT_SECRET=${app.clientSecret}\nREDDIT_ADS_REFRESH_TOKEN=a2_xyz\nREDDIT_ADS_AD_ACCOUNT_ID=${grant.refreshToken}\n`,
        );
        const before = await stateAndAudit(v);
        const swapped = await v.cli(['import', 'env', '--file', file]);
        expect(swapped.code, swapped.stderr).toBe(2);
        expect(swapped.stderr).toContain(
          `${file} line 4: REDDIT_ADS_AD_ACCOUNT_ID is not a Reddit Ads ad account id (a2_ and letters and digits`,
        );
        expect(`${swapped.stdout}${swapped.stderr}`).not.toContain(grant.refreshToken);
        expect(await stateAndAudit(v)).toEqual(before);
        const linkedin = await refusal(
          v,
          'env',
          `LINKEDIN_CLIENT_ID=abc\nLINKEDIN_AD_ACCOUNT_ID=AQX${grant.refreshToken}\n`,
        );
        expect(linkedin.message).toContain(
          'line 2: LINKEDIN_AD_ACCOUNT_ID is not a LinkedIn ad account id (digits, or urn:li:sponsoredAccount: and digits)',
        );
        expect(linkedin.stderr).not.toContain(grant.refreshToken);
        // connect --account agrees (its own argument may be quoted back).
        const connect = await v.cli(['connect', 'reddit_ads', '--no-browser', '--account', 'xyz-123']);
        expect(connect.code, connect.stderr).toBe(2);
        expect(connect.stderr).toContain('"xyz-123" is not a Reddit Ads ad account id');
      },
    );

    it.runIf(ONCE)('counts lines as dotenv does in a file with old Mac (\\r) line endings', async () => {
      const v = await vault();
      const cr = (lines: string[]) => `${lines.join('\r')}\r`;
      const twice = await refusal(
        v,
        'env',
        cr([
          'GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com',
          '# comment',
          'GOOGLE_ADS_CLIENT_ID=def.apps.googleusercontent.com',
        ]),
      );
      expect(twice.message).toContain('.env line 3 sets GOOGLE_ADS_CLIENT_ID again (first on line 1)');
      const id = await refusal(
        v,
        'env',
        cr(['GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com', '', 'GOOGLE_ADS_LOGIN_CUSTOMER_ID=12345']),
      );
      expect(id.message).toContain(
        '.env line 3: GOOGLE_ADS_LOGIN_CUSTOMER_ID is not a Google Ads customer id',
      );
    });

    it.runIf(ONCE)('refuses a file that is not UTF-8, naming UTF-16 as such', async () => {
      const v = await vault();
      const text = `GOOGLE_ADS_CLIENT_ID=abc.apps.googleusercontent.com\nGOOGLE_ADS_REFRESH_TOKEN=${fakeSecret('r')}\n`;
      const le = await refusal(
        v,
        'env',
        Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]),
      );
      expect(le.message).toContain('is UTF-16 text, not UTF-8');
      expect(le.hint).toContain('Save the file as UTF-8');
      const be = Buffer.from(text, 'utf16le').swap16();
      const big = await refusal(v, 'yaml', Buffer.concat([Buffer.from([0xfe, 0xff]), be]));
      expect(big.message).toContain('is UTF-16 text, not UTF-8');
      // A Latin-1 byte in a value: not silently U+FFFD.
      const latin = await refusal(
        v,
        'env',
        Buffer.concat([
          Buffer.from('GOOGLE_ADS_CLIENT_ID=abc\nGOOGLE_ADS_CLIENT_SECRET=caf'),
          Buffer.from([0xe9, 0x0a]),
        ]),
      );
      expect(latin.message).toContain('.env line 2 is not UTF-8 text');
    });

    it.runIf(ONCE)(
      'google-ads.yaml: keys are case-sensitive, one document only, an open quote where it opens',
      async () => {
        const v = await vault();
        const file = join(v.root, 'google-ads.yaml');
        const secret = fakeSecret('cs');
        writeFileSync(
          file,
          `client_id: x.apps.googleusercontent.com\nclient_secret: ${secret}\nCLIENT_SECRET: other\n`,
        );
        const report = await v.json<ImportJson>(['import', 'google-ads-yaml', file, '--dry-run']);
        expect(report.unknown).toEqual(['CLIENT_SECRET']);
        expect(report.plan.map((p) => `${p.action} ${p.kind}`)).toEqual(['create app']);
        // The stored secret is the lower-case key's: the file without the other key changes nothing.
        expect((await v.cli(['import', 'google-ads-yaml', file])).code).toBe(0);
        writeFileSync(file, `client_id: x.apps.googleusercontent.com\nclient_secret: ${secret}\n`);
        const same = await v.json<ImportJson>(['import', 'google-ads-yaml', file, '--dry-run']);
        expect(same.plan.map((p) => p.action)).toEqual(['unchanged']);

        const docs = await refusal(
          v,
          'yaml',
          `client_id: x.apps.googleusercontent.com\n---\nclient_secret: ${secret}\n`,
        );
        expect(docs.message).toContain('more than one document');
        const open = await refusal(
          v,
          'yaml',
          `client_id: x.apps.googleusercontent.com\nclient_secret: "${secret}\nrefresh_token: x\ndeveloper_token: y\nlogin_customer_id: 1234567890\n`,
        );
        expect(open.message).toContain('google-ads.yaml line 2 is not valid YAML');
        expect(open.message).toContain('a quote that is opened and not closed');
        expect(open.stderr).not.toContain(secret.slice(2, 14));
      },
    );
  });
});
