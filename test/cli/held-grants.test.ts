/**
 * One consent, one grant. `connections add` or `import` given a refresh token the vault already holds
 * for the same app joins that grant (the new account shares it, as `--account X --account Y` in one
 * run does; import's plan says `join`), so revoking any of them revokes them all. The held grant is
 * refreshed once under its lease; the given token is never presented to the platform again (a
 * rotated-away one would be refused, or end the grant). A held grant that needs a person takes no new
 * account: the given token, once it proves to work, makes a grant that replaces it. A dry run of the
 * import shows the join and writes nothing.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AllDoubles,
  GOOGLE_ADWORDS_SCOPE,
  MICROSOFT_ADS_SCOPE,
  MICROSOFT_DEFAULT_CLIENT,
  type MicrosoftDouble,
  startAllDoubles,
  startMicrosoftDouble,
} from '../doubles/index.js';
import { startDaemon } from '../helpers/daemon.js';
import { type AppSetup, addAppFor, addConnection, adoptGrant } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { type CliResult, DB_KIND, ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';
import { until, untilLockWaits } from '../helpers/wait.js';

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vault = vaultsPerTest();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f()));
});

interface ImportJson {
  applied: boolean;
  plan: Array<{ action: string; kind: string; platform: string; target: string; detail: string }>;
  connections: string[];
}

interface Row {
  external_account_id: string;
  status: string;
  token_id: string | null;
  status_message: string | null;
}

function connections(v: TestVault): Promise<Row[]> {
  return v.sql<Row>(
    'select external_account_id, status, token_id, status_message from ad_account_connections order by external_account_id',
  );
}

/** A Google Ads app and its grant, adopted by `connections add` for 1234567890. */
async function googleHeld(v: TestVault) {
  const app = await addAppFor(v, 'google_ads', doubles.google as never);
  const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
  await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: ['1234567890'] });
  return { app, grant };
}

/**
 * A Microsoft Ads app on a double of its own that revokes the whole grant when a rotated-away refresh
 * token is presented again (as a platform detecting refresh token reuse does), a grant it issued
 * (stored nowhere yet), and how many times that grant's first token was presented.
 */
async function strictMicrosoft(given?: TestVault) {
  const microsoft: MicrosoftDouble = await startMicrosoftDouble({ strictRotation: true });
  cleanups.push(() => microsoft.close());
  const v = given ?? (await vault());
  const app = await addAppFor(v, 'microsoft_ads', microsoft as never);
  const grant = microsoft.issueGrant({
    clientId: app.clientId,
    scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
  } as never);
  const presented = () =>
    microsoft
      .tokenRequests('refresh_token')
      .filter((r) => r.form?.get('refresh_token') === grant.refreshToken).length;
  return { microsoft, v, app, grant, presented };
}

/**
 * A Microsoft Ads app whose double revokes the whole grant when a rotated-away refresh token is
 * presented again (as a platform detecting refresh token reuse does), its grant adopted for 987, and
 * how many times the original token was presented (once, by that adoption).
 */
async function microsoftHeld() {
  const held = await strictMicrosoft();
  await adoptGrant(held.v, 'microsoft_ads', held.app.label, held.grant.refreshToken, { accounts: ['987'] });
  expect(held.presented()).toBe(1);
  return held;
}

/**
 * A Microsoft Ads app on a double of its own that revokes the whole grant when a rotated-away refresh
 * token is presented again, and the grant that the import of a .env stored for 987 (the file's token
 * as given, not sent to the platform), since refused by the platform (needs_reauth); how many times
 * the file's token was presented (not yet).
 */
async function microsoftImportedDead(given?: TestVault) {
  const held = await strictMicrosoft(given);
  const { v, app, grant } = held;
  const first = await v.cli([
    'import',
    'env',
    '--file',
    writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '987'),
  ]);
  expect(first.code, first.stderr).toBe(0);
  await v.sql(
    "update ad_account_connections set status = 'needs_reauth', status_message = 'Microsoft Advertising refused the refresh token' where platform = 'microsoft_ads'",
  );
  await v.sql(
    "update oauth_tokens_vault set last_error_code = 'dead_grant' where platform = 'microsoft_ads'",
  );
  expect(held.presented()).toBe(0);
  return held;
}

/** The Microsoft connections: 987 left needing a person without tokens, 988 active on a grant of its own. */
async function expectMicrosoftReplaced(v: TestVault): Promise<void> {
  const rows = (await connections(v)).filter((r) => /^98\d$/.test(r.external_account_id));
  expect(rows).toEqual([
    expect.objectContaining({ external_account_id: '987', status: 'needs_reauth', token_id: null }),
    expect.objectContaining({ external_account_id: '988', status: 'active', token_id: expect.any(String) }),
  ]);
  expect(rows[0]!.status_message).toContain('imported again for microsoft_ads:988');
}

/** 987 and 988 active on one grant, which the double still holds live. */
async function expectMicrosoftJoined(held: Awaited<ReturnType<typeof microsoftHeld>>): Promise<void> {
  expect(held.presented()).toBe(1);
  expect(held.microsoft.findGrant(held.grant.grantId)?.revoked).toBe(false);
  const rows = await connections(held.v);
  expect(rows.map((r) => [r.external_account_id, r.status])).toEqual([
    ['987', 'active'],
    ['988', 'active'],
  ]);
  expect(rows[0]!.token_id).toBe(rows[1]!.token_id);
  await expectNoSecretsLeaked(held.v, [held.grant.refreshToken, held.app.clientSecret]);
}

/** Leaves the grant as a revocation the platform could not be told of does (tokens kept, no longer served); its id. */
async function revocationPending(v: TestVault): Promise<string> {
  await v.sql(
    "update ad_account_connections set status = 'needs_reauth', status_message = 'revocation requested; Google Ads could not be told yet'",
  );
  const [dead] = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
  return dead!.id;
}

/** The dead grant replaced: 1234567890 left needs_reauth without tokens, 2345678901 active on the one new grant. */
async function expectDeadGrantReplaced(v: TestVault, deadId: string): Promise<Row[]> {
  const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
  expect(grants).toHaveLength(1);
  expect(grants[0]!.id).not.toBe(deadId);
  const rows = await connections(v);
  expect(rows).toEqual([
    expect.objectContaining({
      external_account_id: '1234567890',
      status: 'needs_reauth',
      token_id: null,
    }),
    expect.objectContaining({
      external_account_id: '2345678901',
      status: 'active',
      token_id: grants[0]!.id,
    }),
  ]);
  return rows;
}

/** Revoking one connection revokes both, and the grant is gone. */
async function expectBothRevoked(v: TestVault, connection: string): Promise<void> {
  const revoked = await v.json<{ connections: Array<{ external_account_id: string; status: string }> }>([
    'connections',
    'revoke',
    connection,
  ]);
  expect(revoked.connections.map((c) => [c.external_account_id, c.status])).toEqual([
    ['1234567890', 'revoked'],
    ['2345678901', 'revoked'],
  ]);
  expect(await v.sql('select id from oauth_tokens_vault')).toEqual([]);
}

/** A .env's lines naming the app by its client id, the refresh token, and the accounts. */
function envLines(prefix: string, app: AppSetup, refreshToken: string, accounts: string): string[] {
  const account = prefix === 'GOOGLE_ADS_' ? 'CUSTOMER_ID' : 'ACCOUNT_ID';
  return [
    `${prefix}CLIENT_ID=${app.clientId}`,
    `${prefix}CLIENT_SECRET=${app.clientSecret}`,
    `${prefix}DEVELOPER_TOKEN=${app.developerToken}`,
    `${prefix}REFRESH_TOKEN=${refreshToken}`,
    `${prefix}${account}=${accounts}`,
  ];
}

/** A .env naming the app by its client id, the refresh token, and the accounts. */
function writeEnv(
  v: TestVault,
  prefix: string,
  app: AppSetup,
  refreshToken: string,
  accounts: string,
): string {
  return writeLines(v, envLines(prefix, app, refreshToken, accounts));
}

function writeLines(v: TestVault, lines: string[]): string {
  const file = join(v.root, '.env');
  writeFileSync(file, [...lines, ''].join('\n'));
  return file;
}

/** The dump without the audit log (a dry run records that it read the stored secrets). */
function withoutAudit(dump: string): string {
  return dump.slice(0, dump.indexOf('credential_access_audit: '));
}

describe('connections add with a refresh token the vault already holds', () => {
  it('joins the held grant: one grant, the token not sent again, and revoking either revokes both', async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    const refreshes = doubles.google.refreshAttempts;

    const second = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
      accounts: ['2345678901'],
      json: true,
    });
    expect(second.code, second.stderr).toBe(0);
    // The contract's connection list: the account added, active.
    expect(JSON.parse(second.stdout)).toEqual([
      expect.objectContaining({ external_account_id: '2345678901', status: 'active' }),
    ]);
    // Proven to work as any adopted token is, by one refresh: the held grant's, under its lease.
    expect(doubles.google.refreshAttempts).toBe(refreshes + 1);

    const fingerprint = createHash('sha256').update(grant.refreshToken).digest('hex');
    await v.session(async (query) => {
      // The first adoption's refresh decrypted the app's client secret and its developer token: both
      // on record (it listed the client secret alone).
      const [adoption] = await query<{ detail: { decrypted: string[] } }>(
        "select detail from credential_access_audit where action = 'token.adopt' order by id limit 1",
      );
      expect(adoption!.detail.decrypted).toEqual(['client_secret', 'developer_token']);
      const grants = await query<{ id: string; refresh_token_sha256: string }>(
        'select id, refresh_token_sha256 from oauth_tokens_vault',
      );
      expect(grants).toHaveLength(1);
      expect(grants[0]!.refresh_token_sha256).toBe(fingerprint);
      const rows = await query<{ token_id: string }>('select token_id from ad_account_connections');
      expect(rows.map((r) => r.token_id)).toEqual([grants[0]!.id, grants[0]!.id]);
      // Audited as its neighbours: the held grant's refresh, its access token opened to list the
      // accounts (with the grant joined), and the account's creation (via adopt, the grant it joined).
      // Nothing is served: no token leaves the process.
      const audit = await query<{ action: string; target_type: string; detail: Record<string, unknown> }>(
        "select action, target_type, detail from credential_access_audit where id > (select max(id) from credential_access_audit where action = 'token.store')",
      );
      expect(audit.map((a) => a.action)).not.toContain('token.serve');
      expect(audit).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ action: 'token.refresh', target_type: 'grant' }),
          expect.objectContaining({
            action: 'token.adopt',
            detail: expect.objectContaining({
              joined: grants[0]!.id,
              // The app's client secret and developer token (to list the accounts), the access token.
              decrypted: ['client_secret', 'developer_token', 'access_token'],
            }),
          }),
          expect.objectContaining({
            action: 'connection.create',
            detail: expect.objectContaining({
              account: '2345678901',
              via: 'adopt',
              grant: grants[0]!.id,
              shared_with: ['1234567890'],
            }),
          }),
        ]),
      );
      expect(audit.map((a) => a.action)).not.toContain('token.store');
      // Neither the token nor its hash is written anywhere but the grant's row.
      expect(JSON.stringify(audit)).not.toContain(fingerprint);
    });

    await expectBothRevoked(v, 'google_ads:1234567890');
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret], [second.stdout]);
    expect(v.printed.join('\n')).not.toContain(fingerprint);
  });

  it.runIf(ONCE)(
    'joins a Microsoft grant whose token rotated since: the original is never presented again',
    async () => {
      const held = await microsoftHeld();
      const { v, app, grant } = held;

      // The same original token again, for the other account: a person re-running the setup.
      const second = await addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, {
        accounts: ['988'],
      });
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toContain('the vault already holds this refresh token');
      expect(second.stderr).toContain('microsoft_ads:988 shares the grant of microsoft_ads:987');
      await expectMicrosoftJoined(held);
    },
  );

  it.runIf(ONCE)(
    'a held grant that needs a person is not joined: the token, once it works, makes the grant that replaces it',
    async () => {
      const v = await vault();
      const { app, grant } = await googleHeld(v);
      const dead = await revocationPending(v);
      const refreshes = doubles.google.refreshAttempts;

      const again = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['2345678901'],
      });
      expect(again.code, again.stderr).toBe(0);
      // Proven to work first, as any adopted token.
      expect(doubles.google.refreshAttempts).toBe(refreshes + 1);
      const rows = await expectDeadGrantReplaced(v, dead);
      expect(rows[0]!.status_message).toContain('google_ads:2345678901');
      expect(again.stderr).toContain('google_ads:1234567890');

      // Joining a live grant proves it works too: a consent revoked at the platform since is found
      // dead by that refresh (marked so, as any refresh would), and nothing joins it: exit 4.
      doubles.google.revokeGrant(grant.grantId);
      const refused = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['1234567890'],
      });
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('the vault already holds this refresh token');
      expect(await connections(v)).toEqual([
        rows[0],
        expect.objectContaining({ external_account_id: '2345678901', status: 'needs_reauth' }),
      ]);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
    },
  );
  it.runIf(ONCE)(
    'joins a held grant in error and cooling down: a person is acting, so it is tried (as refresh --force)',
    async () => {
      const v = await vault();
      const { app, grant } = await googleHeld(v);
      await v.sql(
        "update ad_account_connections set status = 'error', consecutive_failures = 3, status_message = 'the platform timed out'",
      );
      await v.sql(
        "update oauth_tokens_vault set cooldown_until = now() + interval '10 minutes', last_error_at = now(), last_error_code = 'transient', last_error_message = 'the platform timed out'",
      );
      const refreshes = doubles.google.refreshAttempts;

      const second = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['2345678901'],
      });
      expect(second.code, second.stderr).toBe(0);
      expect(doubles.google.refreshAttempts).toBe(refreshes + 1);
      const rows = await connections(v);
      // The refresh that worked made the held grant's connection active again, as any refresh does.
      expect(rows.map((r) => [r.external_account_id, r.status])).toEqual([
        ['1234567890', 'active'],
        ['2345678901', 'active'],
      ]);
      expect(rows[0]!.token_id).toBe(rows[1]!.token_id);
    },
  );
});

describe('two connections add given the same new refresh token at once', () => {
  it('present it to the platform once: the second waits for the first and joins the grant it stored', async () => {
    const { microsoft, v, app, grant } = await strictMicrosoft();
    // The embedded database is opened by one process at a time, so two commands run at once on it
    // only through a daemon that holds it (every command then shares its one session).
    const daemon = DB_KIND === 'pglite' ? await startDaemon(v) : null;
    if (daemon) cleanups.push(async () => void (await daemon.stop()));
    // Every refresh is answered 3 s late: both processes are under way before either could store a
    // grant, and without waiting for each other both present the token (the second presentation of a
    // token rotated away ends the whole grant here, as Microsoft may).
    microsoft.faults.latencyMs = 3_000;

    const results = await Promise.all(
      ['987', '988'].map((account) =>
        addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: [account] }),
      ),
    );
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    expect(microsoft.tokenRequests('refresh_token')).toHaveLength(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    // One stored the grant, the other joined it (which one depends on who started first).
    const joined = results.filter((r) => r.stderr.includes('the vault already holds this refresh token'));
    expect(joined).toHaveLength(1);
    expect(joined[0]!.stderr).toMatch(/microsoft_ads:98[78] shares the grant of microsoft_ads:98[78]/);

    if (daemon) expect(await daemon.stop()).toBe(0);
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'active', grants[0]!.id],
      ['988', 'active', grants[0]!.id],
    ]);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });
});

/**
 * Makes the Google grant look as one stored before migration 0008 does: no refresh_token_sha256 (an
 * adoption made it: no imported_token_sha256 either). Answers the SHA-256 of its refresh token.
 */
async function storedBefore0008(v: TestVault, refreshToken: string): Promise<string> {
  await v.sql('update oauth_tokens_vault set refresh_token_sha256 = null');
  expect(await v.sql('select imported_token_sha256 from oauth_tokens_vault')).toEqual([
    { imported_token_sha256: null },
  ]);
  return createHash('sha256').update(refreshToken).digest('hex');
}

/** Adding 2345678901 with the grant's token joins it: one grant, both accounts on it. */
async function expectReaddJoins(v: TestVault, app: AppSetup, refreshToken: string): Promise<void> {
  const again = await addConnection(v, 'google_ads', app.label, refreshToken, { accounts: ['2345678901'] });
  expect(again.code, again.stderr).toBe(0);
  expect(again.stderr).toContain('google_ads:2345678901 shares the grant of google_ads:1234567890');
  const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
  expect(grants).toHaveLength(1);
  expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
    ['1234567890', 'active', grants[0]!.id],
    ['2345678901', 'active', grants[0]!.id],
  ]);
}

describe('a grant stored before the token hash was kept (migration 0008)', () => {
  it('is recognised once refreshed: the refresh records the hash of the token it presented', async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    const fingerprint = await storedBefore0008(v, grant.refreshToken);

    const refreshed = await v.cli(['connections', 'refresh', 'google_ads:1234567890']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(await v.sql('select refresh_token_sha256 from oauth_tokens_vault')).toEqual([
      { refresh_token_sha256: fingerprint },
    ]);
    // Neither the hash nor the token anywhere else: not in the refresh's audit row either.
    const audit = await v.sql<{ detail: unknown }>('select detail from credential_access_audit');
    expect(JSON.stringify(audit)).not.toContain(fingerprint);

    // The person who adopted it runs the setup again for another account: the grant is joined.
    await expectReaddJoins(v, app, grant.refreshToken);
    expect(v.printed.join('\n')).not.toContain(fingerprint);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });

  it.runIf(ONCE)("is recognised once the daemon's sweep has refreshed it", async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    const fingerprint = await storedBefore0008(v, grant.refreshToken);
    // Due: a 1-hour token refreshed 58 minutes ago (the sweep takes it past half its life).
    await v.sql(
      "update oauth_tokens_vault set last_refreshed_at = now() - interval '58 minutes', access_token_expires_at = now() + interval '2 minutes'",
    );
    const refreshes = doubles.google.refreshAttempts;
    const daemon = await startDaemon(v);
    cleanups.push(async () => void (await daemon.stop()));
    await until(() => doubles.google.refreshAttempts !== refreshes, { intervalMs: 50 });
    expect(await daemon.stop()).toBe(0);
    expect(await v.sql('select refresh_token_sha256, version from oauth_tokens_vault')).toEqual([
      { refresh_token_sha256: fingerprint, version: 2 },
    ]);

    await expectReaddJoins(v, app, grant.refreshToken);
  });
});

describe('import of a refresh token the vault already holds for other accounts', () => {
  it('joins the held grant: one grant, refreshed once under its lease, and revoking either revokes both', async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    const file = writeEnv(v, 'GOOGLE_ADS_', app, grant.refreshToken, '2345678901');
    const refreshes = doubles.google.refreshAttempts;

    const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(result.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      'unchanged app google-app',
      'join connection 2345678901',
    ]);
    expect(result.plan[1]!.detail).toContain('the grant of google_ads:1234567890');
    expect(result.connections).toHaveLength(1);
    // Proven to work by one refresh: the held grant's, under its lease (Google does not rotate: it is
    // the same token, presented once, not once per copy).
    expect(doubles.google.refreshAttempts).toBe(refreshes + 1);

    const fingerprint = createHash('sha256').update(grant.refreshToken).digest('hex');
    await v.session(async (query) => {
      const grants = await query<{ id: string }>('select id from oauth_tokens_vault');
      expect(grants).toHaveLength(1);
      const rows = await query<{ token_id: string; status: string }>(
        'select token_id, status from ad_account_connections order by external_account_id',
      );
      expect(rows).toEqual([
        { token_id: grants[0]!.id, status: 'active' },
        { token_id: grants[0]!.id, status: 'active' },
      ]);
      // Audited as its neighbours: the held grant's refresh, the account's creation (via import, the
      // grant it joined), and the import with its plan; no grant stored. The access token the
      // refresh brought is not opened, nor served: the import hands out nothing.
      const audit = await query<{ action: string; detail: Record<string, unknown> }>(
        "select action, detail from credential_access_audit where id > (select max(id) from credential_access_audit where action = 'token.store')",
      );
      expect(audit.map((a) => a.action)).not.toContain('token.serve');
      expect(audit).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            action: 'token.refresh',
            detail: expect.objectContaining({ attempts: 1 }),
          }),
          expect.objectContaining({
            action: 'connection.create',
            detail: expect.objectContaining({
              account: '2345678901',
              via: 'import',
              grant: grants[0]!.id,
              shared_with: ['1234567890'],
            }),
          }),
          expect.objectContaining({
            action: 'import',
            detail: expect.objectContaining({
              plan: ['unchanged app google_ads google-app', 'join connection google_ads 2345678901'],
            }),
          }),
        ]),
      );
      expect(audit.map((a) => a.action)).not.toContain('token.store');
      expect(JSON.stringify(audit)).not.toContain(fingerprint);
    });

    await expectBothRevoked(v, 'google_ads:2345678901');
    expect(doubles.google.findGrant(grant.grantId)?.revoked).toBe(true);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
    expect(v.printed.join('\n')).not.toContain(fingerprint);
  });

  it('--dry-run shows the join, asks the platform nothing and writes nothing', async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    const file = writeEnv(v, 'GOOGLE_ADS_', app, grant.refreshToken, '2345678901');
    const refreshes = doubles.google.refreshAttempts;
    const before = await v.dump();

    const dry = await v.cli(['import', 'env', '--file', file, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(
      /join\s+connection\s+google_ads\s+2345678901\s+app google-app, the grant of google_ads:1234567890/,
    );
    expect(dry.stderr).toContain('dry run: nothing was written');
    expect(doubles.google.refreshAttempts).toBe(refreshes);

    const after = await v.dump();
    expect(withoutAudit(after)).toBe(withoutAudit(before));
    // The one row it adds: that the plan read the stored secrets.
    const audit = await v.sql<{ action: string; detail: { plan: string[] } }>(
      'select action, detail from credential_access_audit order by id desc limit 1',
    );
    expect(audit).toEqual([
      expect.objectContaining({
        action: 'import.plan',
        detail: expect.objectContaining({
          plan: ['unchanged app google_ads google-app', 'join connection google_ads 2345678901'],
        }),
      }),
    ]);
  });

  it.runIf(ONCE)(
    'joins a Microsoft grant whose token rotated since: the file’s token is never presented again',
    async () => {
      const held = await microsoftHeld();
      const { v, app, grant, microsoft } = held;
      const refreshes = microsoft.refreshAttempts;

      // The .env the token came from, naming another account.
      const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
      const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(result.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app microsoft-app',
        'join connection 988',
      ]);
      expect(result.plan[1]!.detail).toContain('the grant of microsoft_ads:987');
      expect(microsoft.refreshAttempts).toBe(refreshes + 1);
      await expectMicrosoftJoined(held);
    },
  );

  it.runIf(ONCE)(
    'a held grant that needs a person is not joined: the file’s token, once it works, makes the grant that replaces it',
    async () => {
      const v = await vault();
      const { app, grant } = await googleHeld(v);
      const file = writeEnv(v, 'GOOGLE_ADS_', app, grant.refreshToken, '2345678901');
      const dead = await revocationPending(v);
      const refreshes = doubles.google.refreshAttempts;

      const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(result.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app google-app',
        'create connection 2345678901',
      ]);
      expect(result.plan[1]!.detail).toContain('replaces the grant of google_ads:1234567890');
      // Proven to work first, as an adopted token is.
      expect(doubles.google.refreshAttempts).toBe(refreshes + 1);
      const rows = await expectDeadGrantReplaced(v, dead);
      expect(rows[0]!.status_message).toContain('imported again for google_ads:2345678901');
      // Stored as refreshed now (it was, to prove it works): not left for the daemon's first sweep.
      const [stored] = await v.sql<{ refreshed: boolean }>(
        'select last_refreshed_at is not null as refreshed from oauth_tokens_vault',
      );
      expect(stored!.refreshed).toBe(true);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
    },
  );
});

describe("an import's platform calls use the app as its file makes it", () => {
  it.runIf(ONCE)(
    'a client secret the file changes (rotated at the platform) is the one sent to replace a dead grant, and stored',
    async () => {
      const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
      // The client secret rotated at Microsoft: the one stored is refused from now on.
      const rotated = { ...app, clientSecret: 'msft~rotated~secret' };
      microsoft.registerClient({ ...MICROSOFT_DEFAULT_CLIENT, clientSecret: rotated.clientSecret });

      const file = writeEnv(v, 'MICROSOFT_ADS_', rotated, grant.refreshToken, '988');
      const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(result.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'update app microsoft-app',
        'create connection 988',
      ]);
      expect(result.plan[0]!.detail).toBe('client secret');
      expect(result.plan[1]!.detail).toContain('replaces the grant of microsoft_ads:987');
      // The file's token, refreshed once with the file's secret (the stored one was refused before).
      expect(presented()).toBe(1);
      expect(microsoft.tokenRequests('refresh_token').at(-1)!.form?.get('client_secret')).toBe(
        rotated.clientSecret,
      );
      await expectMicrosoftReplaced(v);
      // Stored with it: the next refresh works.
      const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret, rotated.clientSecret]);
    },
  );

  it.runIf(ONCE)(
    'a held grant the file’s accounts join is refreshed with the client secret the file gives',
    async () => {
      const held = await microsoftHeld();
      const { v, app, grant, microsoft } = held;
      const rotated = { ...app, clientSecret: 'msft~rotated~secret' };
      microsoft.registerClient({ ...MICROSOFT_DEFAULT_CLIENT, clientSecret: rotated.clientSecret });

      const file = writeEnv(v, 'MICROSOFT_ADS_', rotated, grant.refreshToken, '988');
      const result = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(result.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'update app microsoft-app',
        'join connection 988',
      ]);
      expect(microsoft.tokenRequests('refresh_token').at(-1)!.form?.get('client_secret')).toBe(
        rotated.clientSecret,
      );
      await expectMicrosoftJoined(held);
      await expectNoSecretsLeaked(v, [rotated.clientSecret]);
    },
  );

  it.runIf(ONCE)(
    'a client secret in the file that the platform refuses is not stored, and counts nothing against the grant to join',
    async () => {
      const { v, app, grant, microsoft } = await microsoftHeld();
      const state = () =>
        v.sql(
          'select c.status, c.status_message, c.consecutive_failures, t.cooldown_until, t.last_error_code, t.refresh_in_flight_since, t.lease_owner from ad_account_connections c join oauth_tokens_vault t on t.id = c.token_id',
        );
      const before = await state();
      const mistyped = { ...app, clientSecret: 'msft~mistyped~secret' };

      const refused = await v.cli([
        'import',
        'env',
        '--file',
        writeEnv(v, 'MICROSOFT_ADS_', mistyped, grant.refreshToken, '988'),
      ]);
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('the vault already holds this refresh token');
      expect(refused.stderr).toContain('nothing was imported');
      expect(refused.stderr).toContain('check MICROSOFT_ADS_CLIENT_SECRET in the file');
      expect(microsoft.tokenRequests('refresh_token').at(-1)!.form?.get('client_secret')).toBe(
        mistyped.clientSecret,
      );
      // The grant as it was (no failure counted, no cool-down, nothing in doubt), the refusal on record.
      expect(await state()).toEqual(before);
      const [audit] = await v.sql<{ outcome: string; detail: { kind: string; problem: string } }>(
        "select outcome, detail from credential_access_audit where action = 'token.refresh' order by id desc limit 1",
      );
      expect(audit).toEqual({
        outcome: 'failure',
        detail: expect.objectContaining({
          kind: 'client',
          problem: expect.stringContaining('not the stored one'),
        }),
      });
      // The app keeps the secret that works.
      const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:987']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret, mistyped.clientSecret]);
    },
  );
});

describe.runIf(DB_KIND === 'postgres')(
  'a refresh with the app as an import’s file makes it, refused by the platform',
  () => {
    it('gives the lease back in the transaction that records the refusal, not before it', async () => {
      const { v, app, grant, microsoft } = await microsoftHeld();
      const mistyped = { ...app, clientSecret: 'msft~mistyped~secret' };
      const file = writeEnv(v, 'MICROSOFT_ADS_', mistyped, grant.refreshToken, '988');
      const asked = microsoft.tokenRequests('refresh_token').length;
      // Microsoft answers 3 s late; meanwhile another session takes the audit chain's head, so the
      // refusal's audit row waits: the grant's lease must still be held (uncommitted) then, else the
      // lease would be back with nothing on record had that write failed.
      microsoft.faults.latencyMs = 3_000;
      const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
      let leaseWhileWaiting: string | null = null;
      let waited = 0;
      try {
        const refusing = v.cli(['import', 'env', '--file', file]);
        await until(() => microsoft.tokenRequests('refresh_token').length > asked, { intervalMs: 20 });
        const reserved = await other.reserve();
        await reserved`begin`;
        await reserved`select last_id from audit_head for update`;
        waited = await untilLockWaits(other);
        const [row] = await other<
          { lease_owner: string | null }[]
        >`select lease_owner from oauth_tokens_vault`;
        leaseWhileWaiting = row!.lease_owner;
        await reserved`commit`;
        reserved.release();
        const refused = await refusing;
        expect(refused.code, refused.stderr).toBe(4);
      } finally {
        microsoft.faults.latencyMs = 0;
        await other.end();
      }
      expect(waited).toBe(1);
      expect(leaseWhileWaiting).not.toBeNull();
      const after = await v.sql<{ lease_owner: string | null }>('select lease_owner from oauth_tokens_vault');
      expect(after).toEqual([{ lease_owner: null }]);
      const audit = await v.sql<{ outcome: string }>(
        "select outcome from credential_access_audit where action = 'token.refresh' order by id desc limit 1",
      );
      expect(audit).toEqual([{ outcome: 'failure' }]);
    });
  },
);

describe('an import that stops before it writes, after its plan read the stored app’s secrets', () => {
  it('has that read on record (the plan’s transaction is rolled back)', async () => {
    const { v, app, grant } = await microsoftImportedDead();
    const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
    // Another process holds the dead grant's refresh lease: the import stops before it asks anything.
    await v.sql(
      "update oauth_tokens_vault set lease_owner = 'elsewhere', lease_expires_at = now() + interval '1 hour'",
    );
    const [{ last }] = (await v.sql<{ last: number }>(
      'select coalesce(max(id), 0)::int as last from credential_access_audit',
    )) as [{ last: number }];
    const stopped = await v.cli(['import', 'env', '--file', file]);
    expect(stopped.code, stopped.stderr).toBe(7);
    const audit = await v.sql<{ action: string; detail: { source: string; plan: string[] } }>(
      `select action, detail from credential_access_audit where id > ${last} order by id`,
    );
    expect(audit).toEqual([
      {
        action: 'import.plan',
        detail: expect.objectContaining({
          source: expect.stringContaining('.env'),
          plan: ['unchanged app microsoft_ads microsoft-app', 'create connection microsoft_ads 988'],
        }),
      },
    ]);
  });
});

describe('an import that fails after its refresh to replace a dead grant rotated the file’s token', () => {
  /**
   * A vault with a Google grant and a Microsoft grant that needs a person, whose consent's newest token
   * only the file has; the file imported while Google cannot be reached. Microsoft's call comes first
   * (the file's order) and rotates the token; Google's then fails, and with it the import.
   */
  async function failedImport() {
    const v = await vault();
    const { app: googleApp, grant: googleGrant } = await googleHeld(v);
    const { microsoft, app, grant, presented } = await microsoftImportedDead(v);
    const file = writeLines(v, [
      ...envLines('MICROSOFT_ADS_', app, grant.refreshToken, '988'),
      ...envLines('GOOGLE_ADS_', googleApp, googleGrant.refreshToken, '2345678901'),
    ]);
    cleanups.push(async () => {
      doubles.google.faults.reset();
    });
    doubles.google.faults.failNext(3, { status: 503 });
    const before = await connections(v);
    const failed = await v.cli(['import', 'env', '--file', file]);
    expect(failed.code, failed.stderr).toBe(5);
    return { v, googleApp, googleGrant, microsoft, app, grant, presented, file, before, failed };
  }

  it('keeps what the platform gave on the dead grant, says so, and the next import uses it instead of the file’s', async () => {
    const { v, googleGrant, microsoft, app, grant, presented, file, before, failed } = await failedImport();
    expect(failed.stderr).toContain('nothing was imported');
    expect(failed.stderr).toContain(
      "Microsoft Advertising rotated the file's refresh token when it was refreshed to replace the grant of microsoft_ads:987: that token is used up, and the new one is kept on that grant",
    );
    expect(failed.stderr).toContain("importing the file again uses it, and does not send the file's token");
    expect(presented()).toBe(1);
    // Nothing of the import's own was written: the same connections on the same grants (Google's
    // failed refresh is on record on its grant, as any refresh's failure is).
    const shape = (rows: Row[]) => rows.map((r) => [r.external_account_id, r.status, r.token_id]);
    expect(shape(await connections(v))).toEqual(shape(before));

    // Imported again once Google answers: the token kept is presented, not the file's, which Microsoft
    // would take for a stolen one (this double then ends the whole grant).
    const again = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(again.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      'unchanged app microsoft-app',
      'create connection 988',
      'unchanged app google-app',
      'join connection 2345678901',
    ]);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await expectMicrosoftReplaced(v);
    // What is stored is what Microsoft takes now.
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await expectNoSecretsLeaked(v, [grant.refreshToken, googleGrant.refreshToken, app.clientSecret]);
  });

  it('connections add given the file’s used-up token presents the one kept on the dead grant, not the file’s', async () => {
    const { v, googleGrant, microsoft, app, grant, presented } = await failedImport();
    expect(presented()).toBe(1);

    // The same token as the file's, given to connections add: Microsoft is asked with the token kept
    // on the dead grant (the file's, presented again, would be a reuse: this double ends the consent).
    const added = await addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, {
      accounts: ['988'],
    });
    expect(added.code, added.stderr).toBe(0);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    expect(added.stderr).toContain('this refresh token was held by microsoft_ads:987');
    const rows = (await connections(v)).filter((r) => /^98\d$/.test(r.external_account_id));
    expect(rows).toEqual([
      expect.objectContaining({ external_account_id: '987', status: 'needs_reauth', token_id: null }),
      expect.objectContaining({ external_account_id: '988', status: 'active', token_id: expect.any(String) }),
    ]);
    expect(rows[0]!.status_message).toContain('adopted again for microsoft_ads:988');
    // On record as the refresh of the dead grant's consent, with the token it held.
    const [refresh] = await v.sql<{ detail: Record<string, unknown> }>(
      "select detail from credential_access_audit where action = 'token.refresh' and detail->>'via' = 'adopt' order by id desc limit 1",
    );
    expect(refresh!.detail).toEqual(expect.objectContaining({ token: 'held', rotated: true }));
    // What is stored is what Microsoft takes now.
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await expectNoSecretsLeaked(v, [grant.refreshToken, googleGrant.refreshToken, app.clientSecret]);
  });
});

/**
 * `connections add` of the Microsoft token for account 999, which its grant does not reach: refused
 * once the accounts are listed, after the refresh; the error says where the rotated token is (`kept`).
 */
async function addForUnreachable(v: TestVault, app: AppSetup, token: string, kept: string): Promise<void> {
  const wrong = await addConnection(v, 'microsoft_ads', app.label, token, { accounts: ['999'] });
  expect(wrong.code, wrong.stderr).toBe(2);
  expect(wrong.stderr).toContain('this grant does not reach account 999; nothing was stored');
  expect(wrong.stderr).toContain(kept);
}

/** Where a refresh to replace the dead grant of 987 left the token it rotated. */
const KEPT_ON_DEAD =
  'Microsoft Advertising rotated the given refresh token when it was refreshed to replace the grant of microsoft_ads:987: that token is used up, and the new one is kept on that grant';

describe('connections add that fails after its refresh to replace a dead grant rotated the given token', () => {
  it('keeps what the platform gave on the dead grant, says so, and the next connections add uses it', async () => {
    const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
    const before = await connections(v);
    await addForUnreachable(v, app, grant.refreshToken, KEPT_ON_DEAD);
    expect(presented()).toBe(1);
    expect(await connections(v)).toEqual(before);

    // Added again with the right account: the token kept is presented, not the given one.
    const added = await addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, {
      accounts: ['988'],
    });
    expect(added.code, added.stderr).toBe(0);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);

    expect(added.stderr).toContain(
      'the given refresh token was not sent to Microsoft Advertising: that grant held a newer one of the same consent',
    );
    const rows = (await connections(v)).filter((r) => /^98\d$/.test(r.external_account_id));
    expect(rows.map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'needs_reauth', null],
      ['988', 'active', grants[0]!.id],
    ]);
    // What is stored is what Microsoft takes now.
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });

  it('an import after it presents the token kept on the dead grant, not the file’s', async () => {
    const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
    await addForUnreachable(v, app, grant.refreshToken, KEPT_ON_DEAD);
    expect(presented()).toBe(1);

    const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
    const imported = await v.cli(['import', 'env', '--file', file]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await expectMicrosoftReplaced(v);
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
  });
});

describe('connections add of a token the vault does not hold, failing after the platform rotated it', () => {
  /**
   * `connections add` of the token for an account its grant does not reach: refused once the accounts
   * are listed, after the refresh that rotated it. Before, the new token was only in the process's
   * memory then: the given one used up, the consent lost to everyone who held it.
   */
  async function failedAdd() {
    const held = await strictMicrosoft();
    const { v, app, grant, presented } = held;
    await addForUnreachable(
      v,
      app,
      grant.refreshToken,
      'Microsoft Advertising rotated the given refresh token when it was refreshed: that token is used up, and the new one is kept in the vault, on a grant with no account yet (nothing is served from it); adding this refresh token again (connections add, or an import of it) uses it, and does not send the given one',
    );
    expect(presented()).toBe(1);
    expect(await connections(v)).toEqual([]);
    expect(await v.sql('select id from oauth_tokens_vault')).toHaveLength(1);
    return held;
  }

  /** doctor's check of the connections. */
  async function connectionsCheck(v: TestVault) {
    const doctor = await v.cli(['doctor', '--json']);
    const report: { checks: Array<{ name: string }> } = JSON.parse(doctor.stdout);
    return report.checks.find((c) => c.name === 'connections');
  }

  /** One grant left, the one 987's connection is active on, and Microsoft takes what it holds. */
  async function expectOneWorkingGrant({
    v,
    microsoft,
    grant,
    presented,
  }: Awaited<ReturnType<typeof failedAdd>>) {
    expect(presented()).toBe(1);
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'active', grants[0]!.id],
    ]);
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:987']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    // The grant that kept the answer went once the new one held it, on record; the chain is whole.
    const destroyed = await v.sql<{ target_id: string }>(
      "select target_id from credential_access_audit where action = 'token.destroy'",
    );
    expect(destroyed).toHaveLength(1);
    expect(destroyed[0]!.target_id).not.toBe(grants[0]!.id);
    const verified = await v.cli(['audit', 'verify']);
    expect(verified.code, verified.stderr).toBe(0);
  }

  it('keeps the new token in the vault, says so, and the next connections add presents it, not the given one', async () => {
    const held = await failedAdd();
    // doctor says a token is kept, of which app, and how to use it.
    expect(await connectionsCheck(held.v)).toEqual({
      name: 'connections',
      status: 'warning',
      message: `0 connections: 1 refresh token kept with no account by a \`connections add\` that did not finish (the platform had rotated the one given; microsoft_ads app ${held.app.label})`,
      fix: 'Run that `credvault connections add` again with the same refresh token: it uses the one kept, not the given one.',
    });
    const added = await addConnection(held.v, 'microsoft_ads', held.app.label, held.grant.refreshToken, {
      accounts: ['987'],
    });
    expect(added.code, added.stderr).toBe(0);
    expect(added.stderr).toContain(
      'the given refresh token was not sent to Microsoft Advertising: an earlier connections add of it failed after Microsoft Advertising rotated it, and kept the new one in the vault, which was refreshed instead',
    );
    await expectOneWorkingGrant(held);
    await expectNoSecretsLeaked(held.v, [held.grant.refreshToken, held.app.clientSecret]);
  });

  it('a kept token the platform refuses is dropped, and the error says to connect the account again', async () => {
    const held = await failedAdd();
    held.microsoft.revokeGrant(held.grant.grantId);
    const again = await addConnection(held.v, 'microsoft_ads', held.app.label, held.grant.refreshToken, {
      accounts: ['987'],
    });
    expect(again.code, again.stderr).toBe(4);
    expect(again.stderr).toContain(
      'it is dropped from the vault: connect the account again with `credvault connect`',
    );
    expect(await held.v.sql('select id from oauth_tokens_vault')).toEqual([]);
    expect(await connectionsCheck(held.v)).toMatchObject({ status: 'ok', message: 'none yet' });
    const verified = await held.v.cli(['audit', 'verify']);
    expect(verified.code, verified.stderr).toBe(0);
  });

  it.runIf(ONCE)(
    'apps remove takes a kept token with the app, and says the platform was not told',
    async () => {
      const held = await failedAdd();
      const removed = await held.v.cli(['apps', 'remove', held.app.label]);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stderr).toContain(
        '1 refresh token that a connections add which did not finish kept (with no account) went with the app, and Microsoft Advertising was not told: its consent stays listed there until removed at https://',
      );
      expect(await held.v.sql('select id from oauth_tokens_vault')).toEqual([]);
      const [entry] = await held.v.sql<{ detail: Record<string, unknown> }>(
        "select detail from credential_access_audit where action = 'app.remove'",
      );
      expect(entry!.detail).toMatchObject({ connections_removed: 0, revoked: 0, kept_tokens_destroyed: 1 });
    },
  );

  it('an import of the token after it presents the one kept, not the file’s', async () => {
    const held = await failedAdd();
    const file = writeEnv(held.v, 'MICROSOFT_ADS_', held.app, held.grant.refreshToken, '987');
    const imported = await held.v.cli(['import', 'env', '--file', file]);
    expect(imported.code, imported.stderr).toBe(0);
    await expectOneWorkingGrant(held);
  });
});

describe.runIf(DB_KIND === 'postgres')(
  'an import whose transaction fails after its refresh rotated the file’s token',
  () => {
    it('keeps the new token on the dead grant when the app is disabled while Microsoft answers', async () => {
      const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
      const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
      // Microsoft answers the refresh four seconds after it is asked: the app is disabled meanwhile,
      // which the import's second pass refuses (a disabled app takes no import).
      microsoft.faults.latencyMs = 4000;
      const running = v.cli(['import', 'env', '--file', file]);
      await until(() => presented() !== 0, { intervalMs: 20 });
      expect(presented()).toBe(1);
      const disabled = await v.cli(['apps', 'disable', `microsoft_ads/${app.label}`]);
      expect(disabled.code, disabled.stderr).toBe(0);
      const failed = await running;
      expect(failed.code, failed.stderr).toBe(7);
      expect(failed.stderr).toContain('is disabled');
      expect(failed.stderr).toContain(
        "Microsoft Advertising rotated the file's refresh token when it was refreshed to replace the grant of microsoft_ads:987: that token is used up, and the new one is kept on that grant",
      );
      microsoft.faults.latencyMs = 0;

      const enabled = await v.cli(['apps', 'enable', `microsoft_ads/${app.label}`]);
      expect(enabled.code, enabled.stderr).toBe(0);
      const again = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(again.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app microsoft-app',
        'create connection 988',
      ]);
      expect(presented()).toBe(1);
      await expectMicrosoftReplaced(v);
      const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:988']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
      expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    });
  },
);

describe.runIf(DB_KIND === 'postgres')(
  'an import whose second pass fails with a database error after its refresh rotated the file’s token',
  () => {
    it('says the token is used up and kept on the dead grant when the database refuses the second pass', async () => {
      const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
      const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
      // Microsoft answers 3 s late; meanwhile the apps' table is renamed away (as a database restored
      // from an older dump would be), so the second pass fails with the driver's error (42P01), not
      // one of credvault's; it is put back once the import has ended.
      microsoft.faults.latencyMs = 3_000;
      const other = postgres(v.databaseUrl!, { max: 1, onnotice: () => {} });
      let failed: CliResult;
      try {
        const running = v.cli(['import', 'env', '--file', file]);
        await presentedTimes(presented, 1);
        await other`alter table oauth_app_credentials rename to oauth_app_credentials_away`;
        try {
          failed = await running;
        } finally {
          await other`alter table oauth_app_credentials_away rename to oauth_app_credentials`;
        }
      } finally {
        microsoft.faults.latencyMs = 0;
        await other.end();
      }
      expect(failed.stderr).toContain('is not migrated');
      expect(failed.code, failed.stderr).not.toBe(0);
      expect(failed.stderr).toContain(
        "Microsoft Advertising rotated the file's refresh token when it was refreshed to replace the grant of microsoft_ads:987: that token is used up, and the new one is kept on that grant",
      );
      // The next import uses what was kept, and does not send the file's token again.
      const again = await v.json<ImportJson>(['import', 'env', '--file', file]);
      expect(again.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
        'unchanged app microsoft-app',
        'create connection 988',
      ]);
      expect(presented()).toBe(1);
      await expectMicrosoftReplaced(v);
    });
  },
);

/**
 * Runs `statements` in a transaction of another session of the vault's PostgreSQL database, starts
 * the commands, waits until each waits for a lock (until one does, WAIT_MS at most; then ten seconds
 * at most for the others), then commits: what another process's transaction committing at that
 * moment would do. The commands' results, and how many were seen waiting.
 */
async function whileHeld(v: TestVault, statements: string[], ...commands: Array<() => Promise<CliResult>>) {
  const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
  try {
    const reserved = await other.reserve();
    await reserved`begin`;
    for (const statement of statements) await reserved.unsafe(statement);
    const running = commands.map((command) => command());
    // The first wait is awaited (however long the processes take to start on a busy machine); the
    // others' 10 s are also the time a command that waits otherwise (an import waiting for a claim,
    // not a lock) has to get under way before the commit.
    let waited = await untilLockWaits(other);
    if (waited >= 1) waited = await untilLockWaits(other, commands.length, { timeoutMs: 10_000 });
    await reserved`commit`;
    reserved.release();
    return { results: await Promise.all(running), waited };
  } finally {
    await other.end();
  }
}

describe.runIf(DB_KIND === 'postgres')('a join and a revocation of the same grant at once', () => {
  it('an account joining while the grant is revoked is revoked with the others, on record', async () => {
    const v = await vault();
    await googleHeld(v);
    // A join (as joinGrantIn makes it: the grant locked, then the account attached) that commits
    // while the revocation is under way.
    const {
      results: [result],
      waited,
    } = await whileHeld(
      v,
      [
        'select id from oauth_tokens_vault for update',
        `insert into ad_account_connections (id, platform, app_id, token_id, external_account_id, status, connected_by)
           select gen_random_uuid(), platform, app_id, token_id, '2345678901', 'active', 'joiner' from ad_account_connections`,
      ],
      () => v.cli(['connections', 'revoke', 'google_ads:1234567890', '--json']),
    );
    expect(result!.code, result!.stderr).toBe(0);
    expect(waited).toBe(1);
    // Not left active with no tokens: revoked with the account it joined, and each on record.
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['1234567890', 'revoked', null],
      ['2345678901', 'revoked', null],
    ]);
    const audit = await v.sql<{ account: string }>(
      "select detail->>'account' as account from credential_access_audit where action = 'connection.revoke' order by 1",
    );
    expect(audit.map((a) => a.account)).toEqual(['1234567890', '2345678901']);
  });

  it('an import adding accounts to the grant of its own token waits for a revocation under way, and then finds it revoked', async () => {
    const v = await vault();
    const { app, grant } = await googleHeld(v);
    // The file names the account connected with its token and a new one: the new one joins that grant.
    const file = writeEnv(v, 'GOOGLE_ADS_', app, grant.refreshToken, '1234567890,2345678901');
    // A revocation (as connections revoke makes it: the grant locked, its connections revoked, the
    // grant destroyed) that commits while the import is under way.
    const {
      results: [result],
      waited,
    } = await whileHeld(
      v,
      [
        'select id from oauth_tokens_vault for update',
        "update ad_account_connections set status = 'revoked'",
        'delete from oauth_tokens_vault',
      ],
      () => v.cli(['import', 'env', '--file', file]),
    );
    expect(waited).toBe(1);
    // The import takes the grant's row before it writes anything, so it plans once the revocation
    // has committed, as an import run after it: the revoked connection is kept revoked, and the file's
    // new account takes a grant of its own (the platform refuses the revoked token at its first refresh).
    expect(result!.code, result!.stderr).toBe(0);
    const plan = await v.sql<{ detail: { plan: string[] } }>(
      "select detail from credential_access_audit where action = 'import'",
    );
    expect(plan[0]!.detail.plan).toEqual([
      'unchanged app google_ads google-app',
      'skip connection google_ads 1234567890',
      'create connection google_ads 2345678901',
    ]);
    const rows = await connections(v);
    expect(rows.map((r) => [r.external_account_id, r.status])).toEqual([
      ['1234567890', 'revoked'],
      ['2345678901', 'active'],
    ]);
    expect(rows[0]!.token_id).toBeNull();
  });

  it('connections add and an import given the same new refresh token at once store one grant: the second joins it', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubles.google as never);
    const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const file = writeEnv(v, 'GOOGLE_ADS_', app, grant.refreshToken, '2345678901');
    const sha = createHash('sha256').update(grant.refreshToken).digest('hex');
    // connections add claims the token and waits for its lock (held here); the import waits for that
    // claim, then finds the grant connections add stored and joins it. Without them, each found no
    // grant holding the token and stored its own.
    const { results, waited } = await whileHeld(
      v,
      [
        `select pg_advisory_xact_lock(hashtextextended(id::text || ':' || '${sha}', 0)) from oauth_app_credentials`,
      ],
      () => addConnection(v, 'google_ads', app.label, grant.refreshToken, { accounts: ['1234567890'] }),
      () => v.cli(['import', 'env', '--file', file]),
    );
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect(waited).toBe(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['1234567890', 'active', grants[0]!.id],
      ['2345678901', 'active', grants[0]!.id],
    ]);
    await expectBothRevoked(v, 'google_ads:1234567890');
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });
});

describe.runIf(DB_KIND === 'postgres')(
  'an import and a storing transaction of the same token at once',
  () => {
    it("takes the token's lock before it writes an audit row (the app it updates): no deadlock with connections add", async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubles.google as never);
      const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
      // The file changes the app (its redirect URI): the import writes an audit row for that update.
      const file = writeLines(v, [
        ...envLines('GOOGLE_ADS_', app, grant.refreshToken, '2345678901'),
        'GOOGLE_ADS_REDIRECT_URI=https://example.com/oauth/changed',
      ]);
      const sha = createHash('sha256').update(grant.refreshToken).digest('hex');
      // Another session does what `connections add`'s storing transaction does: the token's lock, then
      // (while the import waits for that lock) an audit row, which locks the audit chain's head. An
      // import that had written its app's audit row before taking the token's lock held that head:
      // each waited for the other, and PostgreSQL ended one of them (a deadlock).
      const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
      try {
        const reserved = await other.reserve();
        await reserved`begin`;
        await reserved.unsafe(
          `select pg_advisory_xact_lock(hashtextextended(id::text || ':' || '${sha}', 0)) from oauth_app_credentials`,
        );
        const importing = v.cli(['import', 'env', '--file', file]);
        const waited = await untilLockWaits(other);
        expect(waited).toBe(1);
        await reserved`set local lock_timeout = '5s'`;
        const head = await reserved`select last_id from audit_head for update`.then(
          () => 'locked',
          (error: Error) => error.message,
        );
        await reserved`commit`;
        reserved.release();
        expect(head).toBe('locked');
        const imported = await importing;
        expect(imported.code, imported.stderr).toBe(0);
      } finally {
        await other.end();
      }
      const plan = await v.sql<{ detail: { plan: string[] } }>(
        "select detail from credential_access_audit where action = 'import'",
      );
      expect(plan[0]!.detail.plan).toEqual([
        'update app google_ads google-app',
        'create connection google_ads 2345678901',
      ]);
    });
  },
);

/**
 * Runs commands against the vault at once: on the embedded database through a daemon that holds it
 * (opened directly, it is one process's at a time; through the daemon every command shares its one
 * session), on PostgreSQL as they are. `stopDaemon` before the test reads the database itself.
 */
async function concurrently(v: TestVault): Promise<{ stopDaemon: () => Promise<void> }> {
  const daemon = DB_KIND === 'pglite' ? await startDaemon(v) : null;
  if (daemon) cleanups.push(async () => void (await daemon.stop()));
  return {
    stopDaemon: async () => {
      if (daemon) expect(await daemon.stop()).toBe(0);
    },
  };
}

/** Waits (WAIT_MS at most) until the double has been asked `n` times with the token. */
async function presentedTimes(presented: () => number, n: number): Promise<void> {
  await until(() => presented() >= n, { intervalMs: 20 });
  expect(presented()).toBe(n);
}

describe('an import and connections add given the same refresh token at once (Microsoft: rotated at each refresh)', () => {
  it('an import replacing a dead grant holds the token while it presents it: connections add waits, and joins the grant it stored', async () => {
    const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
    const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
    const { stopDaemon } = await concurrently(v);
    // Refreshes are answered 3 s late: connections add starts while the import's refresh is out.
    microsoft.faults.latencyMs = 3_000;

    const importing = v.cli(['import', 'env', '--file', file]);
    await presentedTimes(presented, 1);
    const adding = addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987'] });
    const [imported, added] = await Promise.all([importing, adding]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stderr).toContain('microsoft_ads:987 shares the grant of microsoft_ads:988');
    // Presented once: a second presentation, a reuse, would have ended the whole consent here.
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);

    microsoft.faults.latencyMs = 0;
    const refreshed = await v.cli(['connections', 'refresh', 'microsoft_ads:987']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    await stopDaemon();
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'active', grants[0]!.id],
      ['988', 'active', grants[0]!.id],
    ]);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });

  it('an import that would replace a dead grant waits for connections add presenting the token, then joins the grant it stored', async () => {
    const { microsoft, v, app, grant, presented } = await microsoftImportedDead();
    const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
    const { stopDaemon } = await concurrently(v);
    microsoft.faults.latencyMs = 3_000;

    const adding = addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987'] });
    await presentedTimes(presented, 1);
    // The import claims the file's token before it plans: it waits for connections add, and its plan,
    // made then, joins the grant connections add stored (refreshed once, the file's token not sent).
    const imported = await v.json<ImportJson>(['import', 'env', '--file', file]);
    const added = await adding;
    expect(added.code, added.stderr).toBe(0);
    expect(imported.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      'unchanged app microsoft-app',
      'join connection 988',
    ]);
    expect(presented()).toBe(1);
    microsoft.faults.latencyMs = 0;
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await stopDaemon();
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'active', grants[0]!.id],
      ['988', 'active', grants[0]!.id],
    ]);
  });

  it('an import given a new token while connections add presents it waits for it, and joins the grant it stored (the token is presented once)', async () => {
    const { microsoft, v, app, grant, presented } = await strictMicrosoft();
    const file = writeEnv(v, 'MICROSOFT_ADS_', app, grant.refreshToken, '988');
    const { stopDaemon } = await concurrently(v);
    // connections add presents the token (answered 3 s late); meanwhile the import is given the same
    // token, which no grant holds yet. Before, the import stored it as it was (used up once
    // connections add's refresh rotated it) without waiting; now it waits for connections add's claim.
    microsoft.faults.latencyMs = 3_000;

    const adding = addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987'] });
    await presentedTimes(presented, 1);
    const imported = await v.json<ImportJson>(['import', 'env', '--file', file]);
    expect(imported.plan.map((p) => `${p.action} ${p.kind} ${p.target}`)).toEqual([
      'unchanged app microsoft-app',
      'join connection 988',
    ]);
    const added = await adding;
    expect(added.code, added.stderr).toBe(0);
    microsoft.faults.latencyMs = 0;

    // The grant holds the rotated token, which Microsoft takes: the used-up one, presented again,
    // would be a reuse (this double then ends the whole consent).
    for (const account of ['988', '987']) {
      const refreshed = await v.cli(['connections', 'refresh', `microsoft_ads:${account}`]);
      expect(refreshed.code, refreshed.stderr).toBe(0);
    }
    expect(presented()).toBe(1);
    expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
    await stopDaemon();
    const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
    expect(grants).toHaveLength(1);
    expect((await connections(v)).map((r) => [r.external_account_id, r.status, r.token_id])).toEqual([
      ['987', 'active', grants[0]!.id],
      ['988', 'active', grants[0]!.id],
    ]);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
  });
});
