import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AllDoubles,
  type Double,
  exhaustGoogleAdsQuota,
  GOOGLE_ADWORDS_SCOPE,
  REDDIT_SCOPES,
  REDDIT_TEST_USER_AGENT,
  startAllDoubles,
} from '../doubles/index.js';
import {
  addAppFor,
  addConnection,
  adoptGrant,
  connectViaDouble,
  consentOnly,
  followConsent,
  type PlatformKey,
} from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { atTerminal, HAS_SCRIPT } from '../helpers/terminal.js';
import { ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vault = vaultsPerTest();

const CONNECTION_FIELDS = [
  'id',
  'platform',
  'app_id',
  'app_label',
  'external_account_id',
  'account_name',
  'name',
  'status',
  'status_message',
  'consecutive_failures',
  'access_token_expires_at',
  'refresh_token_expires_at',
  'last_refreshed_at',
  'connected_by',
  'created_at',
].sort();

/**
 * A `follow` for connectViaDouble that answers at credvault's callback itself, with the authorization's
 * state and these parameters (an error, a code the platform never issued), instead of the consent.
 */
function answerWith(params: Record<string, string>) {
  return async (url: string) => {
    const authorize = new URL(url);
    const callback = new URL(authorize.searchParams.get('redirect_uri')!);
    callback.searchParams.set('state', authorize.searchParams.get('state')!);
    for (const [name, value] of Object.entries(params)) callback.searchParams.set(name, value);
    const answer = await fetch(callback);
    await answer.text();
    return { callbackStatus: answer.status, callbackUrl: callback.toString() };
  };
}

/**
 * The flow `connect` gave up is used up: its own state, with `callbackUrl` (the real answer), is
 * refused by `connections complete` as already used (exit 2).
 */
async function expectGivenUp(v: TestVault, authorizeUrl: string, callbackUrl: string): Promise<void> {
  const state = new URL(authorizeUrl).searchParams.get('state')!;
  const later = await v.cli(['connections', 'complete', '--state', state, '--callback-url', callbackUrl]);
  expect(later.code, later.stderr).toBe(2);
  expect(later.stderr).toContain('this authorization was already used');
}

function doubleFor(platform: PlatformKey): Double<unknown, unknown> {
  return {
    google_ads: doubles.google,
    microsoft_ads: doubles.microsoft,
    linkedin_ads: doubles.linkedin,
    reddit_ads: doubles.reddit,
  }[platform] as unknown as Double<unknown, unknown>;
}

const CASES: Array<{ platform: PlatformKey; account: string; name: string; revokes: boolean }> = [
  { platform: 'google_ads', account: '123-456-7890', name: 'Acme US', revokes: true },
  { platform: 'microsoft_ads', account: '987', name: 'Acme Search US', revokes: false },
  { platform: 'linkedin_ads', account: 'urn:li:sponsoredAccount:5101', name: 'Acme LinkedIn', revokes: true },
  { platform: 'reddit_ads', account: 'a2_xyz', name: 'Acme Reddit', revokes: true },
];

describe.each(CASES)(
  '$platform: connect, token get, refresh, revoke',
  ({ platform, account, name, revokes }) => {
    // What differs between the four is the platform's protocol; the rows the flow writes, refreshes
    // and deletes go through the same statements for all of them. Google's runs on both databases,
    // the others once.
    it.runIf(ONCE || platform === 'google_ads')(
      'runs the whole flow with the built binary, leaking no secret',
      async () => {
        const double = doubleFor(platform);
        const v = await vault();
        const app = await addAppFor(v, platform, double);
        const exchangesBefore = double.codeExchangeCount;

        const run = await connectViaDouble(v, platform, ['--account', account, '--name', `${platform}-main`]);
        expect(run.result.code, run.result.stderr).toBe(0);
        expect(run.callbackStatus).toBe(200);
        expect(double.codeExchangeCount).toBe(exchangesBefore + 1);
        // The URL is on stderr, alone on its line; stdout carries only the result.
        expect(run.result.stdout).not.toContain('http');
        const authorize = new URL(run.authorizeUrl);
        if (platform === 'google_ads' || platform === 'microsoft_ads') {
          expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
        } else {
          expect(authorize.searchParams.get('code_challenge')).toBeNull();
        }
        if (platform === 'google_ads') {
          expect(authorize.searchParams.get('access_type')).toBe('offline');
          expect(authorize.searchParams.get('prompt')).toBe('consent');
        }
        if (platform === 'reddit_ads') expect(authorize.searchParams.get('duration')).toBe('permanent');

        const connections = JSON.parse(run.result.stdout) as Array<Record<string, unknown>>;
        expect(connections).toHaveLength(1);
        const connection = connections[0]!;
        expect(Object.keys(connection).sort()).toEqual(CONNECTION_FIELDS);
        expect(connection).toMatchObject({
          platform,
          app_id: app.id,
          account_name: name,
          name: `${platform}-main`,
          status: 'active',
          consecutive_failures: 0,
          connected_by: 'test-operator',
        });
        if (platform === 'linkedin_ads') {
          // LinkedIn's refresh token ends a fixed 365 days after consent.
          const end = Date.parse(connection.refresh_token_expires_at as string);
          expect(end - Date.now()).toBeGreaterThan(364 * 86_400_000);
        }

        const ref = `${platform.replace('_', '-')}:${connection.external_account_id}`;
        const first = await v.cli(['token', 'get', ref], { secretOutput: true });
        expect(first.code, first.stderr).toBe(0);
        const token = first.stdout.trim();
        expect(first.stdout).toBe(`${token}\n`);
        expect(double.accessTokens.get(token)?.revoked).toBe(false);

        const asJson = await v.cli(['token', 'get', `${platform}-main`, '--format', 'json'], {
          secretOutput: true,
        });
        const doc = JSON.parse(asJson.stdout);
        expect(Object.keys(doc).sort()).toEqual(
          [
            'access_token',
            'connection_id',
            'expires_at',
            'external_account_id',
            'platform',
            'token_type',
          ].sort(),
        );
        expect(doc).toMatchObject({
          access_token: token,
          token_type: 'Bearer',
          connection_id: connection.id,
          platform,
        });
        // --json is one JSON document: it does not go with a format that prints lines.
        const mixed = await v.cli(['token', 'get', `${platform}-main`, '--format', 'env', '--json']);
        expect(mixed.code).toBe(2);
        expect(mixed.stdout).toBe('');
        expect(JSON.parse(mixed.stderr).error.message).toContain('does not go with --format env');
        const header = await v.cli(['token', 'get', connection.id as string, '--format', 'header'], {
          secretOutput: true,
        });
        expect(header.stdout).toBe(`Authorization: Bearer ${token}\n`);

        const refreshesBefore = double.refreshCount;
        const refreshed = await v.json<Record<string, unknown>>(['connections', 'refresh', ref, '--force']);
        expect(refreshed.status).toBe('active');
        expect(double.refreshCount).toBe(refreshesBefore + 1);
        const second = (await v.cli(['token', 'get', ref], { secretOutput: true })).stdout.trim();
        expect(second).not.toBe(token);
        expect(double.refreshCount).toBe(refreshesBefore + 1); // the fresh token was served, not refreshed again

        const revokesBefore = double.revokeCount;
        const revoked = await v.json<{
          platform: string;
          connections: Array<{ status: string }>;
          consent_page: string | null;
        }>(['connections', 'revoke', ref]);
        expect(revoked.connections.map((c) => c.status)).toEqual(['revoked']);
        if (revokes) {
          expect(revoked.platform).toBe('revoked');
          // LinkedIn's endpoint is unconfirmed: both of its tokens are revoked there.
          expect(double.revokeCount).toBe(revokesBefore + (platform === 'linkedin_ads' ? 2 : 1));
          // The grant is dead at the platform, not only its access token: the refresh token mints no more.
          expect(double.findGrant(second)?.revoked).toBe(true);
          expect(double.accessTokens.get(second)?.revoked).toBe(true);
        } else {
          expect(revoked.platform).toBe('no_endpoint');
          expect(revoked.consent_page).toContain('account.live.com');
        }
        await v.session(async (query) => {
          expect(await query('select id from oauth_tokens_vault')).toEqual([]);
          expect(await query("select id from data_keys where scope = 'grant'")).toEqual([]);
        });
        const after = await v.cli(['token', 'get', ref]);
        expect(after.code).toBe(4);
        expect(after.stderr).toContain('was revoked');

        // Every token the double ever issued (to this test or any other): none may show anywhere.
        const issued = [...double.refreshTokens.keys(), ...double.accessTokens.keys()];
        await expectNoSecretsLeaked(v, [
          app.clientSecret,
          ...(app.developerToken ? [app.developerToken] : []),
          ...issued,
        ]);
      },
    );
  },
);

describe('Google Ads accounts under a manager', () => {
  it.runIf(ONCE)(
    'finds an account under a sub-manager (two levels down) through the app’s manager',
    async () => {
      const google = doubles.google;
      const saved = structuredClone({
        customers: google.accounts.customers,
        links: google.accounts.links,
        accessible: google.accounts.accessible,
      });
      google.accounts.customers.push(
        {
          ...google.accounts.customers[0]!,
          id: '3334445556',
          descriptiveName: 'Acme EMEA Manager',
          manager: true,
        },
        {
          ...google.accounts.customers[1]!,
          id: '4445556667',
          descriptiveName: 'Acme DE',
          currencyCode: 'EUR',
        },
      );
      google.accounts.links.push(
        { managerId: '1112223334', clientId: '3334445556' },
        { managerId: '3334445556', clientId: '4445556667' },
      );
      try {
        const v = await vault();
        const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'), {
          label: 'google-mcc',
          extra: { login_customer_id: '1112223334' },
        });
        const grant = google.issueGrant({
          clientId: app.clientId,
          scope: 'https://www.googleapis.com/auth/adwords',
        });
        const added = await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, {
          accounts: ['4445556667'],
          json: true,
        });
        const [connection] = JSON.parse(added.stdout) as Array<Record<string, unknown>>;
        expect(connection).toMatchObject({ external_account_id: '4445556667', account_name: 'Acme DE' });
        const details = async () =>
          (
            await v.sql<{ details: Record<string, string> }>(
              "select details from ad_account_connections where external_account_id = '4445556667'",
            )
          )[0]!.details;
        expect(await details()).toMatchObject({ login_customer_id: '1112223334' });

        // The account leaves the manager and is granted to the person directly; connected again, its
        // calls must no longer name the manager.
        google.accounts.links = google.accounts.links.filter((l) => l.clientId !== '4445556667');
        google.accounts.accessible.push('4445556667');
        const again = google.issueGrant({
          clientId: app.clientId,
          scope: 'https://www.googleapis.com/auth/adwords',
        });
        await adoptGrant(v, 'google_ads', app.label, again.refreshToken, { accounts: ['4445556667'] });
        const after = await details();
        expect(after.reached).toBe('direct');
        expect(after.login_customer_id).toBeUndefined();
      } finally {
        google.accounts.customers = saved.customers;
        google.accounts.links = saved.links;
        google.accounts.accessible = saved.accessible;
      }
    },
  );
});

describe('a refresh token with an end of its own', () => {
  it.runIf(ONCE)(
    'a Google app in Testing (7-day refresh tokens): the end holds through refreshes and status warns of it',
    async () => {
      const google = doubles.google;
      google.settings.refreshTokenTtlSeconds = 7 * 86_400;
      try {
        const v = await vault();
        await addAppFor(v, 'google_ads', doubleFor('google_ads'));
        const run = await connectViaDouble(v, 'google_ads', [
          '--account',
          '1234567890',
          '--name',
          'testing-app',
        ]);
        expect(run.result.code, run.result.stderr).toBe(0);
        const [connection] = JSON.parse(run.result.stdout) as Array<{ refresh_token_expires_at: string }>;
        const end = Date.parse(connection!.refresh_token_expires_at);
        expect(Math.abs(end - (Date.now() + 7 * 86_400_000))).toBeLessThan(60_000);

        // Google's refresh answers carry no refresh token and no end: the 7 days still hold.
        const refreshed = await v.json<{ refresh_token_expires_at: string }>([
          'connections',
          'refresh',
          'testing-app',
          '--force',
        ]);
        expect(Date.parse(refreshed.refresh_token_expires_at)).toBe(end);
        const status = await v.cli(['status']);
        expect(status.stdout).toContain(`the refresh token expires ${new Date(end).toISOString()}`);
      } finally {
        google.settings.refreshTokenTtlSeconds = null;
      }
    },
  );
});

describe('refusals', () => {
  // The platform's answers and the callback's HTTP surface: nothing was exchanged or stored, so
  // the database has no part in them (the reused state below, which is, runs on both).
  it.runIf(ONCE)('access_denied at the platform: exit 4, nothing stored', async () => {
    const v = await vault();
    await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    doubles.google.consent = 'deny';
    try {
      const run = await connectViaDouble(v, 'google_ads', ['--account', '1234567890']);
      expect(run.result.code).toBe(4);
      expect(run.result.stderr).toContain('access was denied at Google Ads; nothing was stored');
    } finally {
      doubles.google.consent = 'auto';
    }
    await v.session(async (query) => {
      expect(await query('select id from ad_account_connections')).toEqual([]);
      expect(await query('select id from oauth_tokens_vault')).toEqual([]);
    });
  });

  it.runIf(ONCE)(
    'a callback with a wrong state is refused and nothing is exchanged: connect ends with exit 2 and says how to start again',
    async () => {
      const v = await vault();
      await addAppFor(v, 'microsoft_ads', doubleFor('microsoft_ads'));
      const attempts = doubles.microsoft.codeExchangeAttempts;
      let page = '';
      let real = '';
      const run = await connectViaDouble(v, 'microsoft_ads', ['--account', '987'], {
        async follow(url) {
          // A real code the platform would exchange (an attacker's own consent), under a state that
          // is not the one credvault is waiting for: a login CSRF.
          const consent = await fetch(url, { redirect: 'manual' });
          real = consent.headers.get('location')!;
          const forged = new URL(real);
          expect(forged.searchParams.get('code')).toBeTruthy();
          forged.searchParams.set('state', 'not-the-state');
          const answer = await fetch(forged);
          page = await answer.text();
          return { callbackStatus: answer.status, callbackUrl: forged.toString() };
        },
      });
      expect(run.callbackStatus).toBe(400);
      expect(page).toContain('not the sign-in credvault was waiting for');
      expect(run.result.code, run.result.stderr).toBe(2);
      expect(JSON.parse(run.result.stderr.trim().split('\n').at(-1)!).error).toEqual({
        code: 'invalid_input',
        message:
          'the answer at the callback carried a state this sign-in did not issue (a stale browser tab, the answer to another sign-in, or a forged request); nothing was exchanged or stored. Run `credvault connect microsoft_ads` again, and finish the sign-in in the browser tab it opens.',
      });
      expect(doubles.microsoft.codeExchangeAttempts).toBe(attempts);
      await v.session(async (query) => {
        expect(await query('select id from ad_account_connections')).toEqual([]);
        expect(await query('select id from oauth_tokens_vault')).toEqual([]);
      });
      // On record, as `connections complete` records a wrong state.
      expect(
        await v.sql(
          "select detail->>'problem' as problem from credential_access_audit where action = 'oauth.callback' and outcome = 'denied'",
        ),
      ).toEqual([{ problem: 'wrong state' }]);
      // The flow connect gave up is used up: its own state, with the real answer, completes nothing.
      await expectGivenUp(v, run.authorizeUrl, real);
      expect(doubles.microsoft.codeExchangeAttempts).toBe(attempts);
      expect(await v.sql('select id from ad_account_connections')).toEqual([]);

      // No answer in time: given up as well, on record.
      const waited = await v.cli([
        'connect',
        'microsoft_ads',
        '--no-browser',
        '--account',
        '987',
        '--timeout',
        '1s',
      ]);
      expect(waited.code, waited.stderr).toBe(4);
      expect(waited.stderr).toContain('no authorization arrived within 1s');
      const abandoned = await v.sql<{ problem: string }>(
        "select detail->>'problem' as problem from credential_access_audit where action = 'oauth.abandon'",
      );
      expect(abandoned).toEqual([{ problem: 'no answer in time' }]);
      expect(await v.sql('select id from oauth_states where used_at is null')).toEqual([]);
    },
  );

  it.runIf(ONCE)(
    'a callback with the right state but no code nor error is no answer: the wait goes on',
    async () => {
      const v = await vault();
      await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
        async beforeConsent(url) {
          const authorize = new URL(url);
          const early = new URL(authorize.searchParams.get('redirect_uri')!);
          early.searchParams.set('state', authorize.searchParams.get('state')!);
          const answer = await fetch(early);
          expect(answer.status).toBe(400);
          expect(await answer.text()).toContain('credvault is still waiting');
        },
      });
      expect(run.result.code, run.result.stderr).toBe(0);
    },
  );

  it.runIf(ONCE).each([
    ['temporarily_unavailable', 5, 'Run connect again in a while'],
    ['invalid_scope', 2, "The platform refused the app's request"],
  ])(
    'error=%s at the callback: exit %i, the platform’s description shown, nothing stored',
    async (error, exit, hint) => {
      const v = await vault();
      await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
        follow: answerWith({ error, error_description: 'The <b>reason</b>, in words' }),
      });
      expect(run.result.code, run.result.stderr).toBe(exit);
      const printed = JSON.parse(run.result.stderr.trim().split('\n').at(-1)!) as {
        error: { message: string };
      };
      expect(printed.error.message).toContain(
        `answered the authorization with ${error}: The <b>reason</b>, in words`,
      );
      expect(run.result.stderr).toContain(hint);
      expect(await v.sql('select id from ad_account_connections')).toEqual([]);
    },
  );

  // Reddit refuses a bad code with HTTP 200 and `{"error":"invalid_grant"}` (test/doubles/reddit.ts);
  // before, that was "not a valid OAuth response", retried as if Reddit were down.
  it.runIf(ONCE)('a code Reddit refuses (HTTP 200 with an error body) is shown as refused', async () => {
    const v = await vault();
    await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
    const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
      follow: answerWith({ code: 'not-a-code-reddit-issued' }),
    });
    expect(run.result.code, run.result.stderr).toBe(4);
    expect(run.result.stderr).toContain('was refused: invalid_grant');
    expect(run.result.stderr).not.toContain('not a valid OAuth response');
    expect(await v.sql('select id from ad_account_connections')).toEqual([]);
  });

  it.runIf(ONCE)(
    'localhost is heard on both loopback addresses: a program on the other one stops connect',
    async ({ skip }) => {
      const v = await vault();
      const app = await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const port = Number(new URL(app.redirectUri).port);
      const squatter = createNetServer();
      const bound = await new Promise<boolean>((resolve) => {
        squatter.once('error', () => resolve(false));
        squatter.listen(port, '::1', () => resolve(true));
      });
      if (!bound) skip('this machine has no IPv6 loopback');
      try {
        const run = await v.cli(['connect', 'reddit_ads', '--no-browser', '--account', 'a2_xyz']);
        expect(run.code, run.stderr).toBe(2);
        expect(run.stderr).toContain(`cannot listen for the callback on [::1]:${port} (EADDRINUSE)`);
      } finally {
        squatter.close();
      }
    },
  );

  it.runIf(ONCE)('a reused or expired state is refused with exit 2 and stores nothing', async () => {
    const v = await vault();
    await addAppFor(v, 'microsoft_ads', doubleFor('microsoft_ads'));
    const started = await v.json<{
      authorize_url: string;
      state: string;
      redirect_uri: string;
      expires_at: string;
    }>(['connections', 'start', 'microsoft_ads']);
    expect(Date.parse(started.expires_at) - Date.now()).toBeGreaterThan(9 * 60_000);
    expect(Date.parse(started.expires_at) - Date.now()).toBeLessThanOrEqual(10 * 60_000);
    // Only its hash is stored, in no column in any form; the PKCE verifier is stored encrypted.
    const stored = await v.sql<{ row: Record<string, unknown> }>(
      'select to_jsonb(s) as row from oauth_states s',
    );
    expect(stored).toHaveLength(1);
    expect(stored[0]!.row.state_hash).toBe(createHash('sha256').update(started.state).digest('hex'));
    expect(JSON.stringify(stored)).not.toContain(started.state);
    expect(stored[0]!.row.code_verifier_enc).toMatch(/^cv1:[0-9a-f-]{36}:/);
    const challenge = new URL(started.authorize_url).searchParams.get('code_challenge');
    expect(challenge).toBeTruthy();

    const consent = await fetch(started.authorize_url, { redirect: 'manual' });
    const callbackUrl = consent.headers.get('location')!;
    const done = await v.json<Array<{ external_account_id: string }>>([
      'connections',
      'complete',
      '--state',
      started.state,
      '--callback-url',
      callbackUrl,
      '--account',
      '988',
    ]);
    expect(done.map((c) => c.external_account_id)).toEqual(['988']);
    // A second state, made to expire; the grant as it stands before the three refusals below (the
    // used state is not touched by the update, and is refused as used before its age is looked at).
    const expiring = await v.json<{ state: string; authorize_url: string }>([
      'connections',
      'start',
      'microsoft_ads',
    ]);
    const { tokensBefore, keysBefore } = await v.session(async (query) => {
      await query("update oauth_states set expires_at = now() - interval '1 minute' where used_at is null");
      return {
        tokensBefore: await query('select id, version from oauth_tokens_vault order by id'),
        keysBefore: await query("select id from data_keys where scope = 'grant' order by id"),
      };
    });
    const again = await v.cli([
      'connections',
      'complete',
      '--state',
      started.state,
      '--callback-url',
      callbackUrl,
    ]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already used');
    const late = await fetch(expiring.authorize_url, { redirect: 'manual' });
    const expired = await v.cli([
      'connections',
      'complete',
      '--state',
      expiring.state,
      '--callback-url',
      late.headers.get('location')!,
      '--account',
      '987',
    ]);
    expect(expired.code).toBe(2);
    expect(expired.stderr).toContain('expired');
    const unknown = await v.cli(['connections', 'complete', '--state', 'made-up', '--code', 'x']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown state');
    await v.session(async (query) => {
      expect((await query('select id from ad_account_connections')).length).toBe(1);
      expect(await query('select id, version from oauth_tokens_vault order by id')).toEqual(tokensBefore);
      expect(await query("select id from data_keys where scope = 'grant' order by id")).toEqual(keysBefore);
    });
  });

  // The accounts are chosen before anything is stored: no transaction to undo.
  it.runIf(ONCE)(
    'several reachable accounts and no --account without a terminal: exit 2 listing them, nothing stored',
    async () => {
      const v = await vault();
      await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const run = await connectViaDouble(v, 'reddit_ads');
      expect(run.result.code).toBe(2);
      expect(run.result.stderr).toContain('several ad accounts');
      expect(run.result.stderr).toContain('a2_xyz (Acme Reddit)');
      expect(run.result.stderr).toContain('a2_uvw (Acme Reddit EU)');
      expect(await v.sql('select id from oauth_tokens_vault')).toEqual([]);
    },
  );

  it('one consent for several accounts makes connections sharing one grant', async () => {
    const v = await vault();
    await addAppFor(v, 'linkedin_ads', doubleFor('linkedin_ads'));
    const run = await connectViaDouble(v, 'linkedin_ads', ['--account', '5101', '--account', '5102']);
    expect(run.result.code, run.result.stderr).toBe(0);
    const made = JSON.parse(run.result.stdout) as Array<{ external_account_id: string }>;
    expect(made.map((c) => c.external_account_id).sort()).toEqual(['5101', '5102']);
    const grants = await v.sql<{ n: number }>(
      'select count(distinct token_id)::int as n from ad_account_connections',
    );
    expect(grants[0]!.n).toBe(1);
  });

  it.runIf(ONCE)(
    'refuses before any URL is printed what could only fail after the person consented',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
      const grant = doubles.google.issueGrant({
        clientId: app.clientId,
        scope: 'https://www.googleapis.com/auth/adwords',
      });
      expect(
        (
          await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, {
            accounts: ['1234567890'],
            name: 'main',
          })
        ).code,
      ).toBe(0);
      const exchanges = doubles.google.codeExchangeCount;
      const refused = async (args: string[], code: number, message: string) => {
        const run = await v.cli(['connect', 'google_ads', '--no-browser', ...args]);
        expect(run.code, run.stderr).toBe(code);
        expect(run.stderr).toContain(message);
        expect(run.stderr).not.toContain('http://');
      };
      await refused(['--account', 'abc'], 2, '"abc" is not a Google Ads customer id');
      await refused(
        ['--account', '123-456-7890', '--account', '2345678901', '--name', 'both'],
        2,
        '--name names one connection, but several accounts were chosen',
      );
      await refused(
        ['--account', '2345678901', '--name', 'main'],
        7,
        'a connection named "main" already exists',
      );
      await refused(
        ['--timeout', '601'],
        2,
        '--timeout must be whole seconds (or a duration like 90s or 5m) from 1s to 600s',
      );
      expect(doubles.google.codeExchangeCount).toBe(exchanges);
      // connections add too, before the refresh token is tried at the platform (which may rotate it).
      const refreshes = doubles.google.refreshAttempts;
      const adopted = await addConnection(v, 'google_ads', app.label, 'never-sent', {
        accounts: ['2345678901'],
        name: 'main',
      });
      expect(adopted.code, adopted.stderr).toBe(7);
      expect(adopted.stderr).toContain('a connection named "main" already exists');
      expect(doubles.google.refreshAttempts).toBe(refreshes);
      expect(await v.sql('select name from ad_account_connections')).toEqual([{ name: 'main' }]);
    },
  );
});

describe('connections revoke when the platform does not take it', () => {
  type Revoked = { platform: string; consent_page: string | null; connections: Array<{ status: string }> };

  it.runIf(ONCE)(
    'tries a 503 again; a platform that stays down changes nothing (exit 5) unless --force',
    async () => {
      const v = await vault();
      const reddit = doubles.reddit;
      const app = await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const adopt = async (account: string) => {
        const grant = reddit.issueGrant({ clientId: app.clientId, scope: REDDIT_SCOPES } as never);
        expect(
          (await adoptGrant(v, 'reddit_ads', app.label, grant.refreshToken, { accounts: [account] })).code,
        ).toBe(0);
        return grant;
      };
      const path = '/api/v1/revoke_token';
      const once = await adopt('a2_xyz');
      reddit.faults.failNext(1, { status: 503, path, headers: { 'retry-after': '1' } });
      const revoked = await v.json<Revoked>(['connections', 'revoke', 'reddit_ads:a2_xyz']);
      expect(revoked.platform).toBe('revoked');
      expect(reddit.findGrant(once.grantId)?.revoked).toBe(true);

      const down = await adopt('a2_uvw');
      reddit.faults.failNext(3, { status: 503, path });
      const refused = await v.cli(['connections', 'revoke', 'reddit_ads:a2_uvw']);
      expect(refused.code, refused.stderr).toBe(5);
      expect(refused.stderr).toContain('could not be told to revoke reddit_ads:a2_uvw');
      expect(refused.stderr).toContain('its tokens are kept here to try again, and no longer served');
      expect(reddit.faults.pending.failures).toBe(0);
      // Its tokens are kept to tell the platform later, but nothing is served from them meanwhile;
      // the attempt is on record.
      expect((await v.cli(['token', 'get', 'reddit_ads:a2_uvw'], { secretOutput: true })).code).toBe(4);
      const attempt = await v.sql<{ outcome: string; detail: { at_platform: string } }>(
        "select outcome, detail from credential_access_audit where action = 'connection.revoke' order by id desc limit 1",
      );
      expect(attempt[0]).toMatchObject({ outcome: 'failure', detail: { at_platform: 'unreachable' } });
      // What is left to do is that revocation, not a new consent (before, status said to connect again).
      const status = await v.json<{ connections: Array<{ external_account_id: string; action: string }> }>([
        'status',
      ]);
      expect(status.connections.find((c) => c.external_account_id === 'a2_uvw')?.action).toContain(
        'credvault connections revoke reddit_ads:a2_uvw',
      );
      reddit.faults.failNext(3, { status: 503, path });
      const forced = await v.json<Revoked>(['connections', 'revoke', 'reddit_ads:a2_uvw', '--force']);
      expect(forced.platform).toBe('failed');
      expect(forced.consent_page).toBeTruthy();
      expect(forced.connections.map((c) => c.status)).toEqual(['revoked']);
      expect(reddit.findGrant(down.grantId)?.revoked).toBe(false);
    },
  );

  it.runIf(ONCE)(
    'LinkedIn: a refresh token the platform refused is not "revoked", even when its access token was',
    async () => {
      const v = await vault();
      const linkedin = doubles.linkedin;
      const app = await addAppFor(v, 'linkedin_ads', doubleFor('linkedin_ads'));
      const grant = linkedin.issueGrant({ clientId: app.clientId, scope: 'r_ads rw_ads' } as never);
      expect(
        (await adoptGrant(v, 'linkedin_ads', app.label, grant.refreshToken, { accounts: ['5101'] })).code,
      ).toBe(0);
      // The first call, the refresh token's, is refused for good; the access token's goes through.
      linkedin.faults.failNext(1, {
        status: 400,
        path: '/oauth/v2/revoke',
        body: { error: 'invalid_request', error_description: 'token not revocable' },
      });
      const revoked = await v.json<Revoked>(['connections', 'revoke', 'linkedin_ads:5101']);
      expect(revoked.platform).toBe('failed');
      expect(revoked.consent_page).toContain('linkedin.com');
      expect(linkedin.findGrant(grant.grantId)?.revoked).toBe(false);
    },
  );
});

describe('apps remove', () => {
  it('refuses while a connection holds tokens through the app (exit 7); --force revokes them at the platform first', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const grant = doubles.google.issueGrant({
      clientId: app.clientId,
      scope: 'https://www.googleapis.com/auth/adwords',
    });
    const added = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
      accounts: ['1234567890'],
    });
    expect(added.code, added.stderr).toBe(0);
    const refused = await v.cli(['apps', 'remove', app.label]);
    expect(refused.code).toBe(7);
    expect(refused.stderr).toContain('used by 1 connection');
    expect(refused.stderr).toContain('--force');
    const revokes = doubles.google.revokeCount;
    expect((await v.cli(['apps', 'remove', app.label, '--force'])).code).toBe(0);
    expect(doubles.google.revokeCount).toBe(revokes + 1);
    await v.session(async (query) => {
      expect(await query('select id from ad_account_connections')).toEqual([]);
      expect(await query('select id from oauth_tokens_vault')).toEqual([]);
      // The audit log's rows themselves (`audit list` is tested in its own files).
      const audit = await query<{ action: string }>('select action from credential_access_audit');
      expect(audit.map((a) => a.action)).toEqual(expect.arrayContaining(['connection.revoke', 'app.remove']));
    });
  });

  it.runIf(ONCE)(
    '--force says which consents the platform was not told of, and where to remove them',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'reddit_ads', doubleFor('reddit_ads'));
      const grant = doubles.reddit.issueGrant({ clientId: app.clientId, scope: REDDIT_SCOPES } as never);
      await adoptGrant(v, 'reddit_ads', app.label, grant.refreshToken, { accounts: ['a2_xyz'] });
      doubles.reddit.faults.failNext(3, { status: 503, path: '/api/v1/revoke_token' });
      const removed = await v.cli(['apps', 'remove', app.label, '--force', '--json']);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stderr).toContain('reddit_ads:a2_xyz: ');
      expect(removed.stderr).toContain("Remove the app's access at https://www.reddit.com/prefs/apps");
      expect(JSON.parse(removed.stdout).revocations).toEqual([
        expect.objectContaining({ platform: 'failed', consent_page: 'https://www.reddit.com/prefs/apps' }),
      ]);
      expect(doubles.reddit.findGrant(grant.grantId)?.revoked).toBe(false);
    },
  );

  it.runIf(ONCE)(
    'counts and names only the connections that still hold tokens; a list filter that matches none says so',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
      for (const account of ['1234567890', '2345678901']) {
        const grant = doubles.google.issueGrant({
          clientId: app.clientId,
          scope: 'https://www.googleapis.com/auth/adwords',
        });
        await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: [account] });
      }
      expect((await v.cli(['connections', 'revoke', 'google_ads:1234567890'])).code).toBe(0);

      // The revoked connection holds no token and goes with the app: only the other one blocks.
      const refused = await v.cli(['apps', 'remove', app.label]);
      expect(refused.code, refused.stderr).toBe(7);
      expect(refused.stderr).toContain(
        `app google_ads/${app.label} is used by 1 connection that still holds tokens: google_ads:2345678901`,
      );
      expect(refused.stderr).not.toContain('1234567890');
      expect(refused.stderr).toContain('revoked connections are removed with the app');

      // Connections exist, none matches: said as such, with the filter.
      const none = await v.cli(['connections', 'list', '--status', 'needs_reauth']);
      expect(none.code, none.stderr).toBe(0);
      expect(none.stdout).toBe('');
      expect(none.stderr).toContain('no connection matches --status needs_reauth (2 connections in all');
      expect(none.stderr).not.toContain('no connections yet');
      const other = await v.cli(['connections', 'list', '--platform', 'reddit-ads', '--status', 'active']);
      expect(other.stderr).toContain('no connection matches --platform reddit_ads --status active');
    },
  );
});

describe('connections add', () => {
  // On both databases: its secret scan reads the embedded database's files for the refused tokens.
  it('adopts an existing refresh token after one successful refresh, and refuses a dead one with exit 4', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const grant = doubles.google.issueGrant({
      clientId: app.clientId,
      scope: 'https://www.googleapis.com/auth/adwords',
    });
    const before = doubles.google.refreshCount;
    const added = await v.json<Array<{ external_account_id: string; status: string }>>(
      [
        'connections',
        'add',
        'google-ads',
        '--app',
        app.label,
        '--account',
        '1234567890',
        '--refresh-token-file',
        '-',
      ],
      { input: `${grant.refreshToken}\n` },
    );
    expect(added).toEqual([expect.objectContaining({ external_account_id: '1234567890', status: 'active' })]);
    expect(doubles.google.refreshCount).toBe(before + 1);

    const dead = doubles.google.issueGrant({
      clientId: app.clientId,
      scope: 'https://www.googleapis.com/auth/adwords',
    });
    doubles.google.revokeGrant(dead.grantId);
    const refused = await addConnection(v, 'google_ads', app.label, dead.refreshToken, {
      accounts: ['2345678901'],
    });
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('Google Ads refused the refresh token');
    expect(refused.stderr).toContain('invalid_grant');
    expect(refused.stderr).not.toContain(dead.refreshToken);

    // Google down is not Google refusing: exit 5, and said so.
    const live = doubles.google.issueGrant({
      clientId: app.clientId,
      scope: 'https://www.googleapis.com/auth/adwords',
    });
    doubles.google.faults.failNext(1, { status: 503 });
    const down = await addConnection(v, 'google_ads', app.label, live.refreshToken, {
      accounts: ['2345678901'],
    });
    expect(down.code, down.stderr).toBe(5);
    expect(down.stderr).toContain('Google Ads could not be asked about the refresh token');
    expect(doubles.google.faults.pending.failures).toBe(0);
    await expectNoSecretsLeaked(v, [
      grant.refreshToken,
      dead.refreshToken,
      live.refreshToken,
      app.clientSecret,
    ]);
  });
});

describe.each([
  {
    platform: 'google_ads' as const,
    account: '123-456-7890',
    scopes: ['https://www.googleapis.com/auth/adwords', 'openid'],
  },
  {
    platform: 'microsoft_ads' as const,
    account: '987',
    scopes: ['https://ads.microsoft.com/msads.manage', 'offline_access', 'openid'],
  },
])('$platform: an app that asks for openid', ({ platform, account, scopes }) => {
  it.runIf(ONCE)(
    'connects and refreshes although the answers carry an ID token from another issuer',
    async () => {
      const double = doubleFor(platform);
      const v = await vault();
      await addAppFor(v, platform, double, { extra: { scopes } });
      const run = await connectViaDouble(v, platform, ['--account', account, '--name', 'oidc']);
      expect(run.result.code, run.result.stderr).toBe(0);
      expect(new URL(run.authorizeUrl).searchParams.get('scope')?.split(' ')).toContain('openid');
      const refreshed = await v.cli(['connections', 'refresh', 'oidc', '--force']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
      const token = await v.cli(['token', 'get', 'oidc'], { secretOutput: true });
      expect(token.code, token.stderr).toBe(0);
      expect(double.accessTokens.get(token.stdout.trim())?.revoked).toBe(false);
    },
  );
});

describe('google_ads: the accounts a grant reaches', () => {
  it.runIf(ONCE)(
    'walks a manager granted directly without the app naming one, and leaves out cancelled accounts',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubles.google as never);
      const customer = (id: string, name: string, manager: boolean, status = 'ENABLED') => ({
        id,
        descriptiveName: name,
        currencyCode: 'EUR',
        timeZone: 'Europe/Berlin',
        manager,
        testAccount: false,
        status,
      });
      // An agency user granted its MCC only (and one account of its own, since closed).
      const grant = doubles.google.issueGrant({
        clientId: app.clientId,
        scope: 'https://www.googleapis.com/auth/adwords',
        accounts: {
          customers: [
            customer('5550001110', 'Agency MCC', true),
            customer('5550001111', 'Client Live', false),
            customer('5550001112', 'Client Cancelled', false, 'CANCELED'),
            customer('5550001113', 'Own Closed', false, 'CLOSED'),
          ],
          links: [
            { managerId: '5550001110', clientId: '5550001111' },
            { managerId: '5550001110', clientId: '5550001112' },
          ],
          accessible: ['5550001110', '5550001113'],
        },
      } as never);
      const asked = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['9999999999'],
      });
      expect(asked.code).toBe(2);
      expect(asked.stderr).toContain('5550001111 (Client Live)');
      expect(asked.stderr).not.toContain('5550001112');
      expect(asked.stderr).not.toContain('5550001113');
      // The client is connected through its manager, and its calls say so (login-customer-id).
      await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['5550001111'],
        name: 'live',
      });
      const listed = await v.cli(['campaigns', 'list', 'live', '--json']);
      expect(listed.code, listed.stderr).toBe(0);
      expect(doubles.google.requests.at(-1)?.headers['login-customer-id']).toBe('5550001110');
    },
  );

  // Before, every failed lookup of a customer was taken for "not enabled": the manager left out with
  // its clients, or offered without name and currency.
  it.runIf(ONCE)(
    "a customer's lookup that fails fails the listing; one the user may not read is left out",
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubles.google as never);
      const grant = doubles.google.issueGrant({
        clientId: app.clientId,
        scope: 'https://www.googleapis.com/auth/adwords',
        accounts: {
          customers: [
            { id: '5550002220', descriptiveName: 'Agency MCC', manager: true },
            { id: '5550002221', descriptiveName: 'Client Live', manager: false },
          ].map((c) => ({
            ...c,
            currencyCode: 'EUR',
            timeZone: 'Europe/Berlin',
            testAccount: false,
            status: 'ENABLED',
          })),
          links: [{ managerId: '5550002220', clientId: '5550002221' }],
          // 5550002229: listed, but reading it is refused (USER_PERMISSION_DENIED).
          accessible: ['5550002220', '5550002229'],
        },
      } as never);
      const asked = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['9999999999'],
      });
      expect(asked.code, asked.stderr).toBe(2);
      expect(asked.stderr).toContain('5550002221 (Client Live)');
      expect(asked.stderr).not.toContain('5550002229');
      // A throttled lookup is a failed listing, said as such (an account named is then taken as given;
      // connect without one stops), no longer a manager silently left out with its clients.
      exhaustGoogleAdsQuota(doubles.google, 1, { customerId: '5550002220' });
      const throttled = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['5550002221'],
      });
      expect(throttled.code, throttled.stderr).toBe(0);
      expect(throttled.stderr).toContain(
        'could not list the accounts this grant reaches (reading Google Ads customer 5550002220 failed with HTTP 429 RESOURCE_EXHAUSTED',
      );
    },
  );
});

describe('a consent that brings no refresh token', () => {
  it('linkedin_ads (an app that is no Marketing Developer Platform partner): stores the access token alone, warning when it ends', async () => {
    const v = await vault();
    await addAppFor(v, 'linkedin_ads', doubles.linkedin as unknown as Double<unknown, unknown>);
    doubles.linkedin.settings.refreshTokens = false;
    try {
      const run = await connectViaDouble(v, 'linkedin_ads', ['--account', '5101']);
      expect(run.result.code, run.result.stderr).toBe(0);
      const [connection] = JSON.parse(run.result.stdout) as Array<Record<string, string | null>>;
      expect(connection).toMatchObject({ status: 'active', refresh_token_expires_at: null });
      // LinkedIn's access tokens live 60 days: the warning names that end, and what to do before it.
      const ends = connection!.access_token_expires_at!;
      expect(Date.parse(ends) - Date.now()).toBeGreaterThan(59 * 86_400_000);
      expect(run.result.stderr).toContain(
        `LinkedIn Ads gave no refresh token (it gives them only to Marketing Developer Platform partners): the access token ends ${ends}, and nothing can renew it; connect again before then (\`credvault connect linkedin_ads --account 5101\`)`,
      );
      const token = await v.cli(['token', 'get', 'linkedin-ads:5101'], { secretOutput: true });
      expect(token.code, token.stderr).toBe(0);
      expect(doubles.linkedin.accessTokens.get(token.stdout.trim())?.revoked).toBe(false);
      // Nothing can renew it: a refresh asked of it is refused (exit 4) and leaves it as it was,
      // served until it ends (before, it was marked needs_reauth and served no more).
      const refresh = await v.cli(['connections', 'refresh', 'linkedin-ads:5101']);
      expect(refresh.code, refresh.stderr).toBe(4);
      expect(refresh.stderr).toContain(
        `connection linkedin_ads:5101 has an access token and no refresh token: nothing can renew it, and it ends at ${ends}`,
      );
      const longer = await v.cli(['token', 'get', 'linkedin-ads:5101', '--min-ttl', String(61 * 86_400)]);
      expect(longer.code, longer.stderr).toBe(4);
      expect(longer.stderr).toContain(`sooner than the ${61 * 86_400} s asked (--min-ttl)`);
      const after = await v.json<{ status: string }>(['connections', 'show', 'linkedin-ads:5101']);
      expect(after.status).toBe('active');
      const still = await v.cli(['token', 'get', 'linkedin-ads:5101'], { secretOutput: true });
      expect(still.code, still.stderr).toBe(0);
      expect(still.stdout).toBe(token.stdout);
    } finally {
      doubles.linkedin.settings.refreshTokens = true;
    }
  });

  it.runIf(ONCE)(
    'google_ads (a consent again without prompt=consent): refused with exit 2, the connection held untouched',
    async () => {
      const v = await vault();
      await addAppFor(v, 'google_ads', doubles.google as unknown as Double<unknown, unknown>);
      const first = await connectViaDouble(v, 'google_ads', ['--account', '123-456-7890']);
      expect(first.result.code, first.result.stderr).toBe(0);
      const before = await v.sql('select id, token_id from ad_account_connections');
      const again = await connectViaDouble(v, 'google_ads', ['--account', '123-456-7890'], {
        async follow(url) {
          // Google gives a refresh token again only on prompt=consent.
          const bare = new URL(url);
          bare.searchParams.delete('prompt');
          return followConsent(bare.toString());
        },
      });
      expect(again.result.code, again.result.stderr).toBe(2);
      expect(again.result.stderr).toContain('Google Ads returned no refresh token');
      expect(await v.sql('select id, token_id from ad_account_connections')).toEqual(before);
    },
  );
});

describe.runIf(ONCE)('an app set to an API version the platform no longer serves', () => {
  it('connect says so (exit 2) with the command that sets a served one, not "not found" (exit 3)', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubles.google as unknown as Double<unknown, unknown>, {
      extra: { api_version: 'v21' },
    });
    const run = await connectViaDouble(v, 'google_ads', []);
    expect(run.result.code, run.result.stderr).toBe(2);
    expect(run.result.stderr).toContain('Google Ads no longer serves API version v21');
    expect(run.result.stderr).toContain(`credvault apps update google_ads/${app.label} --api-version v26`);
  });
});

describe.runIf(ONCE)('an account listing the platform gives no answer to', () => {
  it('ends connect without --account with exit 5 (retry later), saying the consent was not kept; with --account it connects', async () => {
    const v = await vault();
    await addAppFor(v, 'google_ads', doubles.google as unknown as Double<unknown, unknown>);
    try {
      doubles.google.faults.failNext(20, { path: '/v', status: 503 });
      const run = await connectViaDouble(v, 'google_ads', []);
      expect(run.result.code, run.result.stderr).toBe(5);
      const error = JSON.parse(run.result.stderr.trim().split('\n').at(-1)!).error;
      expect(error.code).toBe('unavailable');
      expect(error.message).toContain('could not list the accounts this grant reaches (');
      expect(error.message).toContain('HTTP 503');
      expect(error.message).toContain(
        'Run `credvault connect google_ads` again in a while (this consent was not kept: access is to be allowed again), or name the account with --account ID.',
      );
      expect(await v.json<unknown[]>(['connections', 'list'])).toEqual([]);
      // Named, the account is connected without the listing (a warning says it could not be checked).
      const named = await connectViaDouble(v, 'google_ads', ['--account', '123-456-7890']);
      expect(named.result.code, named.result.stderr).toBe(0);
      expect(named.result.stderr).toContain('could not list the accounts this grant reaches');
    } finally {
      doubles.google.faults.reset();
    }
  });
});

describe.runIf(ONCE)('connect stopped by a signal while it waits', () => {
  it('gives its authorization up (oauth.abandon) and ends by that signal: connections complete cannot finish it later', async () => {
    const v = await vault();
    await addAppFor(v, 'reddit_ads', doubles.reddit as unknown as Double<unknown, unknown>);
    const before = doubles.reddit.codeExchangeAttempts;
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      let ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
        async follow(url, child) {
          // The consent is given, but the browser never comes back: the person gives up at the terminal.
          const consent = await consentOnly(url);
          const exited = new Promise<typeof ended>((resolve) =>
            child.once('exit', (code, sig) => resolve({ code, signal: sig })),
          );
          child.kill(signal);
          ended = await exited;
          return consent;
        },
      });
      // As before: the shell sees the signal's end (130 for SIGINT, 143 for SIGTERM).
      expect(ended, run.result.stderr).toEqual({ code: null, signal });
      expect(run.result.stderr).toContain(
        `stopped (${signal}); this authorization was given up, and nothing was stored`,
      );
      await expectGivenUp(v, run.authorizeUrl, run.callbackUrl);
    }
    expect(doubles.reddit.codeExchangeAttempts).toBe(before);
    expect(await v.json<unknown[]>(['connections', 'list'])).toEqual([]);
    expect(
      await v.sql(
        "select detail->>'problem' as problem from credential_access_audit where action = 'oauth.abandon'",
      ),
    ).toEqual([{ problem: 'stopped' }, { problem: 'stopped' }, { problem: 'stopped' }]);
  });
});

describe.runIf(ONCE)('reddit_ads: an app whose redirect URI is not on this machine (the paste flow)', () => {
  async function remoteApp(v: TestVault) {
    const client = doubles.reddit.registerClient({
      clientId: `remote-${Math.random().toString(36).slice(2, 10)}`,
      clientSecret: `secret-${Math.random().toString(36).slice(2)}`,
      redirectUris: ['https://ads.example.com/oauth/callback'],
      public: false,
    });
    const file = {
      label: 'remote',
      client_id: client.clientId,
      client_secret: client.clientSecret,
      redirect_uri: 'https://ads.example.com/oauth/callback',
      authorize_url: doubles.reddit.endpoints.authorize,
      token_url: doubles.reddit.endpoints.token,
      revoke_url: doubles.reddit.endpoints.revoke,
      api_base_url: doubles.reddit.url,
      user_agent: REDDIT_TEST_USER_AGENT,
    };
    expect(
      (await v.cli(['apps', 'add', 'reddit_ads', '--from-file', '-'], { input: JSON.stringify(file) })).code,
    ).toBe(0);
  }

  it('without a terminal, takes the URL the browser was sent back to as a line on standard input', async () => {
    const v = await vault();
    await remoteApp(v);
    const run = await connectViaDouble(v, 'reddit_ads', ['--app', 'remote', '--account', 'a2_xyz'], {
      paste: true,
    });
    // The consent sent the browser to the remote callback, which nobody here serves.
    expect(run.callbackUrl).toMatch(/^https:\/\/ads\.example\.com\/oauth\/callback\?/);
    expect(run.result.code, run.result.stderr).toBe(0);
    const [connection] = JSON.parse(run.result.stdout) as Array<{
      external_account_id: string;
      status: string;
    }>;
    expect(connection).toMatchObject({ external_account_id: 'a2_xyz', status: 'active' });
  });

  // At a terminal (script(1) gives it one): the end of input at the paste prompt cancels, as Ctrl-C.
  it.runIf(ONCE && HAS_SCRIPT)(
    'Ctrl-D at the paste prompt cancels: exit 2 "cancelled", nothing stored (not an internal error)',
    async () => {
      const v = await vault();
      await remoteApp(v);
      // Before: the prompt's promise never settled, and credvault ended as an internal error (exit 1).
      const out = await atTerminal(
        v,
        'connect reddit_ads --app remote --account a2_xyz --no-browser',
        'paste the whole URL',
        '\x04',
      );
      expect(out, out).toMatch(/exit=2\b/);
      expect(out).toContain('error: cancelled');
      expect(out).not.toContain('internal');
      expect(await v.json<unknown[]>(['connections', 'list'])).toEqual([]);
    },
  );

  it('refuses a pasted URL with its code or state repeated (exit 2, naming it), before anything is exchanged; the flow is given up', async () => {
    const v = await vault();
    await remoteApp(v);
    const before = doubles.reddit.codeExchangeAttempts;
    for (const extra of ['code=x', 'state=other']) {
      const run = await connectViaDouble(v, 'reddit_ads', ['--app', 'remote', '--account', 'a2_xyz'], {
        paste: true,
        async follow(url) {
          const { callbackUrl } = await consentOnly(url);
          return { callbackStatus: 0, callbackUrl: `${callbackUrl}&${extra}` };
        },
      });
      expect(run.result.code, run.result.stderr).toBe(2);
      expect(JSON.parse(run.result.stderr.trim().split('\n').at(-1)!).error.message).toContain(
        `the pasted URL is malformed: its "${extra.split('=')[0]}" parameter appears more than once`,
      );
      // Given up: the URL as the platform sent it no longer completes the flow.
      await expectGivenUp(v, run.authorizeUrl, run.callbackUrl.replace(`&${extra}`, ''));
    }
    expect(doubles.reddit.codeExchangeAttempts).toBe(before);
    expect(await v.json<unknown[]>(['connections', 'list'])).toEqual([]);
  });

  it('without a terminal and with nothing on standard input, ends with exit 2 and stores nothing', async () => {
    const v = await vault();
    await remoteApp(v);
    const result = await v.cli([
      'connect',
      'reddit_ads',
      '--app',
      'remote',
      '--no-browser',
      '--account',
      'a2_xyz',
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('no URL came on standard input');
    expect(await v.json<unknown[]>(['connections', 'list'])).toEqual([]);
  });
});

describe.runIf(ONCE)('the browser connect opens', () => {
  it('gets none of the variables that reach the vault (the key, the database), and the flow completes', async () => {
    const v = await vault();
    await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const bin = join(v.root, 'bin');
    mkdirSync(bin, { recursive: true });
    const seen = join(v.root, 'browser-environment');
    // The "browser": notes its environment, then follows the authorize URL to the callback.
    const browser = join(bin, 'fake-browser');
    writeFileSync(
      browser,
      `#!/bin/sh\nenv > '${seen}'\nexec '${process.execPath}' -e 'fetch(process.argv[1]).then((r) => r.text())' "$1"\n`,
      { mode: 0o755 },
    );
    // The system's xdg-open (where open runs it), or open's own copy, which runs $BROWSER.
    writeFileSync(join(bin, 'xdg-open'), `#!/bin/sh\nexec '${browser}' "$1"\n`, { mode: 0o755 });
    const connected = await v.cli(['connect', 'google_ads', '--account', '1234567890', '--json'], {
      env: {
        PATH: `${bin}:${process.env.PATH}`,
        BROWSER: browser,
        DISPLAY: '',
        CREDENTIAL_MASTER_KEY_FILE: join(v.home, 'master.key'),
        VAULT_TOKEN: 'hvs.not-for-the-browser',
      },
      timeoutMs: 60_000,
    });
    expect(connected.code, connected.stderr).toBe(0);
    const environment = readFileSync(seen, 'utf8');
    expect(environment).toContain(`BROWSER=${browser}`);
    for (const name of ['CREDENTIAL_MASTER_KEY_FILE', 'VAULT_TOKEN', 'CREDVAULT_HOME', 'DATABASE_URL'])
      expect(environment).not.toMatch(new RegExp(`^${name}=`, 'm'));
  });
});

describe.runIf(ONCE)('connections add of an account connected already', () => {
  it('says when the connection it reconnects gets another name (a script asking for the old one finds nothing)', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubleFor('google_ads'));
    const first = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    await adoptGrant(v, 'google_ads', app.label, first.refreshToken, {
      accounts: ['1234567890'],
      name: 'acme',
    });
    const second = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const again = await adoptGrant(v, 'google_ads', app.label, second.refreshToken, {
      accounts: ['1234567890'],
      name: 'acme-us',
    });
    expect(again.stderr).toContain(
      `google_ads:1234567890 was connected already (named acme, through app ${app.label}): it is now connected named acme-us, through app ${app.label}`,
    );
    // Connected again with nothing changed but the grant: no note.
    const third = doubles.google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    const same = await adoptGrant(v, 'google_ads', app.label, third.refreshToken, {
      accounts: ['1234567890'],
    });
    expect(same.stderr).not.toContain('was connected already');
    // Each reconnect destroyed the grant it replaced, said so, and left it unrevoked at the platform
    // (on Google that would revoke the authorization the new grant belongs to).
    expect(again.stderr).toContain(
      'the previous tokens of google_ads:1234567890 were destroyed here (the new grant replaces them); they were not revoked at the platform',
    );
    expect(doubles.google.findGrant(first.refreshToken)?.revoked).toBe(false);

    // connect says a rename as connections add does, and the audit of the reconnect carries it.
    const renamed = await connectViaDouble(v, 'google_ads', ['--account', '1234567890', '--name', 'jp2'], {
      json: false,
    });
    expect(renamed.result.code, renamed.result.stderr).toBe(0);
    expect(renamed.result.stderr).toContain(
      `google_ads:1234567890 was connected already (named acme-us, through app ${app.label}): it is now connected named jp2, through app ${app.label}`,
    );
    expect(renamed.result.stderr).toContain(
      'the previous tokens of google_ads:1234567890 were destroyed here',
    );
    const reconnects = await v.sql<{ via: string; renamed_from: string | null }>(
      "select detail->>'via' as via, detail->>'renamed_from' as renamed_from from credential_access_audit where action = 'connection.reconnect' order by id",
    );
    expect(reconnects).toEqual([
      { via: 'adopt', renamed_from: 'acme' },
      { via: 'adopt', renamed_from: null },
      { via: 'connect', renamed_from: 'acme-us' },
    ]);
    const destroyedGrants = await v.sql<{ via: string }>(
      "select detail->>'via' as via from credential_access_audit where action = 'token.destroy' order by id",
    );
    expect(destroyedGrants.map((d) => d.via)).toEqual(['adopt', 'adopt', 'connect']);
    expect(await v.sql('select id from oauth_tokens_vault')).toHaveLength(1);
  });
});
