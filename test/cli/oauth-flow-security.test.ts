/**
 * The OAuth flow's rules in spec/security.md: a state is bound to the platform and app it was started
 * for, and the callback server of `connect` answers a wrong state without exchanging anything, takes
 * one valid callback, then closes.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect as tcpConnect } from 'node:net';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AllDoubles, type Double, startAllDoubles } from '../doubles/index.js';
import { listeningAddresses, startDaemon } from '../helpers/daemon.js';
import { addAppFor, connectViaDouble, consentOnly, freePort, type PlatformKey } from '../helpers/flows.js';
import { DB_KIND, ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vault = vaultsPerTest();
afterEach(() => doubles.reddit.faults.reset());

function double(platform: 'reddit_ads' | 'linkedin_ads'): Double<unknown, unknown> {
  return (platform === 'reddit_ads' ? doubles.reddit : doubles.linkedin) as unknown as Double<
    unknown,
    unknown
  >;
}

/** Requests to the token endpoints of the doubles these tests use, whatever their grant type. */
const tokenRequests = () => doubles.reddit.tokenRequests().length + doubles.linkedin.tokenRequests().length;

const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** 'open' when a TCP connection to host:port is accepted, else the error code (ECONNREFUSED …). */
function probe(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('open');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/** The error code under a failed fetch (undici puts it on the cause, or on one of its errors). */
async function fetchFailure(url: string): Promise<string> {
  try {
    const answer = await fetch(url);
    return `HTTP ${answer.status}`;
  } catch (error) {
    const cause = (error as { cause?: NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] } }).cause;
    return cause?.code ?? cause?.errors?.[0]?.code ?? String(error);
  }
}

interface Started {
  authorize_url: string;
  state: string;
  redirect_uri: string;
  expires_at: string;
}

/** `connections start` for an app, and the consent at the double: the callback URL it sends back. */
async function startAndConsent(
  v: TestVault,
  platform: PlatformKey,
  app: string,
): Promise<Started & { callbackUrl: string }> {
  const started = await v.json<Started>(['connections', 'start', platform, '--app', app]);
  return { ...started, callbackUrl: (await consentOnly(started.authorize_url)).callbackUrl };
}

/** `connections complete` with a started flow's state and the callback URL its consent sent back. */
function completeFor(v: TestVault, started: Started & { callbackUrl: string }, account: string) {
  return v.json<Array<{ app_id: string; external_account_id: string }>>([
    'connections',
    'complete',
    '--state',
    started.state,
    '--callback-url',
    started.callbackUrl,
    '--account',
    account,
  ]);
}

/** A copy of the URL with one query parameter set, or removed (null). */
function withParam(url: URL, name: string, value: string | null): URL {
  const copy = new URL(url);
  if (value === null) copy.searchParams.delete(name);
  else copy.searchParams.set(name, value);
  return copy;
}

/** What a flow stores: connections and grants, and each state's app and whether it was used up. */
async function storedRows(v: TestVault) {
  return v.session(async (query) => ({
    connections: await query<{ app_id: string; external_account_id: string }>(
      'select app_id, external_account_id from ad_account_connections',
    ),
    grants: (await query('select id from oauth_tokens_vault')).length,
    states: await query<{ app_id: string | null; used: boolean }>(
      'select app_id, used_at is not null as used from oauth_states order by created_at',
    ),
  }));
}

describe('the callback server of connect', () => {
  // What it decides is made in memory, before the database is asked anything (the state consumed at
  // the end goes through statements the tests below run on both databases).
  it.runIf(ONCE)(
    'an answer under a wrong state, or none, is refused and exchanged with nothing: connect ends with exit 2, its port closed',
    async () => {
      const v = await vault();
      await addAppFor(v, 'reddit_ads', double('reddit_ads'), { label: 'reddit-a' });
      await addAppFor(v, 'linkedin_ads', double('linkedin_ads'), { label: 'linkedin-l' });
      // Another flow credvault did start, on another platform: its consent carries a real state too.
      const elsewhere = await startAndConsent(v, 'linkedin_ads', 'linkedin-l');
      const before = tokenRequests();
      // Real codes from consents of the same app (an attacker's own, say), under another state (a
      // login CSRF), under none, and LinkedIn's answer (a state credvault issued, for another flow).
      const wrongs: Array<[string, (right: URL) => URL]> = [
        ['another state', (right) => withParam(right, 'state', 'not-the-state')],
        ['no state', (right) => withParam(right, 'state', null)],
        [
          "another flow's state",
          (right) => new URL(`${right.pathname}${new URL(elsewhere.callbackUrl).search}`, right.origin),
        ],
      ];
      for (const [what, wrong] of wrongs) {
        let page = '';
        let port = 0;
        const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
          async follow(url) {
            const callbackUrl = wrong(new URL((await consentOnly(url)).callbackUrl));
            expect(callbackUrl.searchParams.get('code'), what).toBeTruthy();
            port = Number(callbackUrl.port);
            const answer = await fetch(callbackUrl);
            page = await answer.text();
            return { callbackStatus: answer.status, callbackUrl: callbackUrl.toString() };
          },
        });
        expect(run.callbackStatus, what).toBe(400);
        expect(page).toContain('This is not the sign-in credvault was waiting for; nothing was done');
        expect(run.result.code, run.result.stderr).toBe(2);
        expect(JSON.parse(run.result.stderr.trim().split('\n').at(-1)!).error.message).toContain(
          `the answer at the callback carried ${what === 'no state' ? 'no state' : 'a state this sign-in did not issue'} (a stale browser tab, the answer to another sign-in, or a forged request); nothing was exchanged or stored.`,
        );
        // The one callback it listened for has come: nothing listens any more.
        expect(await probe('127.0.0.1', port), what).toBe('ECONNREFUSED');
      }
      // No platform was asked anything and nothing was stored. Each reddit flow connect gave up is
      // used up (it cannot be completed later), and its refusal on record; the LinkedIn flow's state
      // is untouched by being shown to the wrong callback, and can still finish.
      expect(tokenRequests()).toBe(before);
      const after = await storedRows(v);
      expect(after.connections).toEqual([]);
      expect(after.grants).toBe(0);
      expect(after.states.map((s) => s.used)).toEqual([false, true, true, true]);
      expect(
        await v.sql(
          "select count(*)::int as n from credential_access_audit where action = 'oauth.callback' and outcome = 'denied'",
        ),
      ).toEqual([{ n: 3 }]);
      expect(await completeFor(v, elsewhere, '5101')).toHaveLength(1);
    },
  );

  it.runIf(ONCE)(
    'a request with neither a code nor an error is no answer, whatever its state: connect waits on, and the right callback completes',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'reddit_ads', double('reddit_ads'));
      const before = tokenRequests();
      const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
        async follow(url, child) {
          const { callbackUrl } = await consentOnly(url);
          const right = new URL(callbackUrl);
          // The redirect URI opened by hand, with a state or without.
          for (const bare of [
            withParam(withParam(right, 'code', null), 'state', 'not-the-state'),
            withParam(withParam(right, 'code', null), 'state', null),
          ]) {
            const answer = await fetch(bare);
            expect(answer.status, bare.search).toBe(400);
            expect(await answer.text()).toContain('credvault is still waiting');
          }
          expect(running(child)).toBe(true);
          const answer = await fetch(right);
          expect(await answer.text()).toContain('Signed in');
          return { callbackStatus: answer.status, callbackUrl };
        },
      });
      expect(run.result.code, run.result.stderr).toBe(0);
      expect(tokenRequests()).toBe(before + 1);
      const after = await storedRows(v);
      expect(after.connections).toEqual([{ app_id: app.id, external_account_id: 'a2_xyz' }]);
    },
  );

  it.runIf(ONCE)(
    'closes right after the one valid callback, while connect is still at work: a replay is refused at the TCP level',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'reddit_ads', double('reddit_ads'));
      const port = Number(new URL(app.redirectUri).port);
      const before = doubles.reddit.codeExchangeAttempts;
      // The code exchange takes its time at the platform: connect is past the callback and still running.
      doubles.reddit.faults.latencyMs = 3_000;

      const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
        async follow(url, child) {
          const { callbackUrl } = await consentOnly(url);
          // localhost: it listens on 127.0.0.1, and on ::1 where the machine has it.
          const listening: string[] = [];
          for (const host of ['127.0.0.1', '::1'])
            if ((await probe(host, port)) === 'open') listening.push(host);
          expect(listening).toContain('127.0.0.1');
          // On loopback only: no socket on the machine's other addresses (0.0.0.0, ::) either.
          expect(listeningAddresses(port)).toEqual(listening.sort());
          // A connection opened before the callback and kept idle must not outlive the listener.
          const idle = tcpConnect({ host: '127.0.0.1', port });
          await once(idle, 'connect');
          const idleClosed = once(idle, 'close');

          const answer = await fetch(callbackUrl);
          expect(answer.status).toBe(200);
          await answer.text();
          await until(() => doubles.reddit.codeExchangeAttempts === before + 1, { intervalMs: 20 });
          expect(doubles.reddit.codeExchangeAttempts, 'the code exchange began').toBe(before + 1);
          expect(running(child)).toBe(true);
          for (const host of listening) expect(await probe(host, port), host).toBe('ECONNREFUSED');
          await idleClosed;
          // The same valid URL again: nothing listens any more.
          expect(await fetchFailure(callbackUrl)).toBe('ECONNREFUSED');
          expect(running(child)).toBe(true);
          return { callbackStatus: answer.status, callbackUrl };
        },
      });
      expect(run.result.code, run.result.stderr).toBe(0);
      expect(doubles.reddit.codeExchangeAttempts).toBe(before + 1);
      const stored = await storedRows(v);
      expect(stored.connections).toEqual([{ app_id: app.id, external_account_id: 'a2_xyz' }]);
      expect(stored.grants).toBe(1);
    },
  );
});

describe('a callback with a parameter repeated', () => {
  /** The callback URL with `extra` appended as it is (a second `code` or `state` after the first). */
  const appended = (url: string, extra: string) => `${url}&${extra}`;

  it.runIf(ONCE)(
    'is refused at the loopback before anything is exchanged: an error page, exit 2 naming the parameter, the state given up',
    async () => {
      const v = await vault();
      await addAppFor(v, 'reddit_ads', double('reddit_ads'));
      const before = tokenRequests();
      for (const extra of ['code=x', 'state=other']) {
        let page = '';
        const run = await connectViaDouble(v, 'reddit_ads', ['--account', 'a2_xyz'], {
          async follow(url) {
            const callbackUrl = appended((await consentOnly(url)).callbackUrl, extra);
            const answer = await fetch(callbackUrl);
            page = await answer.text();
            return { callbackStatus: answer.status, callbackUrl };
          },
        });
        const name = extra.split('=')[0];
        expect(run.callbackStatus, extra).toBe(400);
        expect(page).not.toContain('Signed in');
        expect(page).toContain(`carries the &quot;${name}&quot; parameter more than once`);
        expect(run.result.code, run.result.stderr).toBe(2);
        const error = JSON.parse(run.result.stderr.trim().split('\n').at(-1)!).error;
        expect(error.code).toBe('invalid_input');
        expect(error.message).toContain(
          `the answer at the callback is malformed: its "${name}" parameter appears more than once`,
        );
      }
      // Nothing went to the platform; each flow connect gave up is used up, the refusal on record.
      expect(tokenRequests()).toBe(before);
      const after = await storedRows(v);
      expect(after.connections).toEqual([]);
      expect(after.states.map((s) => s.used)).toEqual([true, true]);
      expect(
        await v.sql(
          "select detail->>'problem' as problem from credential_access_audit where action = 'oauth.callback' and outcome = 'denied'",
        ),
      ).toEqual([{ problem: 'malformed answer' }, { problem: 'malformed answer' }]);
    },
  );

  it('is refused by connections complete before its state is used up (exit 2); the answer as sent still completes', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'reddit_ads', double('reddit_ads'), { label: 'reddit-a' });
    const started = await startAndConsent(v, 'reddit_ads', 'reddit-a');
    const before = tokenRequests();
    for (const extra of ['code=x', `state=${started.state}`, 'error=a&error=b', 'iss=a&iss=b']) {
      const refused = await v.cli([
        'connections',
        'complete',
        '--state',
        started.state,
        '--callback-url',
        appended(started.callbackUrl, extra),
        '--account',
        'a2_xyz',
      ]);
      const name = extra.split('=')[0];
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain(
        `--callback-url is malformed: its "${name}" parameter appears more than once`,
      );
      expect(refused.stderr).toContain('nothing was used up or stored');
    }
    expect(tokenRequests()).toBe(before);
    expect((await storedRows(v)).states.map((s) => s.used)).toEqual([false]);
    expect(await completeFor(v, started, 'a2_xyz')).toEqual([
      expect.objectContaining({ app_id: app.id, external_account_id: 'a2_xyz' }),
    ]);
  });
});

describe('a state is bound to the platform and app it was started for', () => {
  // Storing and using up states: on both databases.
  it.runIf(ONCE)(
    "refuses another app's or platform's answer for it, using nothing up; the right answer still completes",
    async () => {
      const v = await vault();
      const a = await addAppFor(v, 'reddit_ads', double('reddit_ads'), { label: 'reddit-a' });
      await addAppFor(v, 'reddit_ads', double('reddit_ads'), { label: 'reddit-b' });
      await addAppFor(v, 'linkedin_ads', double('linkedin_ads'), { label: 'linkedin-l' });
      const sa = await startAndConsent(v, 'reddit_ads', 'reddit-a');
      const sb = await startAndConsent(v, 'reddit_ads', 'reddit-b');
      const sl = await startAndConsent(v, 'linkedin_ads', 'linkedin-l');
      const before = tokenRequests();

      const complete = (state: string, ...rest: string[]) =>
        v.cli(['connections', 'complete', '--state', state, ...rest]);
      // There is no way to name another app: the state says which.
      const otherApp = await complete(sa.state, '--app', 'reddit-b', '--callback-url', sa.callbackUrl);
      expect(otherApp.code).toBe(2);
      expect(otherApp.stderr).toContain("unknown option '--app'");
      // Another app's consent (same platform), another platform's, and the other way round.
      for (const [state, callbackUrl] of [
        [sa.state, sb.callbackUrl],
        [sa.state, sl.callbackUrl],
        [sl.state, sa.callbackUrl],
      ] as const) {
        const refused = await complete(state, '--callback-url', callbackUrl, '--account', 'a2_xyz');
        expect(refused.code, refused.stderr).toBe(2);
        expect(refused.stderr).toContain(
          'the callback URL answers another authorization (its state differs from --state); nothing was stored',
        );
      }
      expect(tokenRequests()).toBe(before);
      let stored = await storedRows(v);
      expect(stored.connections).toEqual([]);
      expect(stored.grants).toBe(0);
      expect(stored.states.map((s) => s.used)).toEqual([false, false, false]);

      // A bare code says nothing of the consent it came from: given with another app's state, the
      // platform's own binding of a code to its client refuses it (exit 4), and nothing is stored.
      const code = new URL(sa.callbackUrl).searchParams.get('code')!;
      const foreignCode = await complete(sb.state, '--code', code, '--account', 'a2_xyz');
      expect(foreignCode.code, foreignCode.stderr).toBe(4);
      expect(foreignCode.stderr).toContain('Reddit Ads refused the authorization code');
      expect(tokenRequests()).toBe(before + 1);
      expect((await storedRows(v)).connections).toEqual([]);

      const done = await completeFor(v, sa, 'a2_xyz');
      expect(done).toEqual([expect.objectContaining({ app_id: a.id, external_account_id: 'a2_xyz' })]);
      stored = await storedRows(v);
      expect(stored.connections).toEqual([{ app_id: a.id, external_account_id: 'a2_xyz' }]);
      expect(stored.grants).toBe(1);
      expect(stored.states.map((s) => s.used)).toEqual([true, true, false]);
    },
  );

  it('completes a state an older credvault started (it records no client id): bound to its app alone', async () => {
    const v = await vault();
    const a = await addAppFor(v, 'reddit_ads', double('reddit_ads'), { label: 'reddit-a' });
    const sa = await startAndConsent(v, 'reddit_ads', 'reddit-a');
    // What a credvault from before migration 0007 inserts, beside this one, in a fleet being upgraded.
    await v.sql('update oauth_states set client_id = null');
    const done = await completeFor(v, sa, 'a2_xyz');
    expect(done).toEqual([expect.objectContaining({ app_id: a.id, external_account_id: 'a2_xyz' })]);
  });

  it.runIf(ONCE)(
    "drops a removed app's expired states with it; its pending ones stay, bound to no app, another app's expired ones stay",
    async () => {
      const v = await vault();
      const google = doubles.google as unknown as Double<unknown, unknown>;
      for (const label of ['kept', 'gone']) await addAppFor(v, 'google_ads', google, { label });
      await startAndConsent(v, 'google_ads', 'kept');
      await startAndConsent(v, 'google_ads', 'gone');
      await startAndConsent(v, 'google_ads', 'gone');
      // The first of each app expired a minute ago (too recently for a connect's purge to take it).
      await v.sql(
        `update oauth_states set expires_at = now() - interval '1 minute'
        where id in (select distinct on (app_id) id from oauth_states order by app_id, created_at)`,
      );
      const states = () =>
        v.sql<{ app: string | null; expired: boolean }>(
          `select a.label as app, s.expires_at < now() as expired
           from oauth_states s left join oauth_app_credentials a on a.id = s.app_id order by s.created_at`,
        );
      expect(await states()).toEqual([
        { app: 'kept', expired: true },
        { app: 'gone', expired: true },
        { app: 'gone', expired: false },
      ]);
      expect((await v.cli(['apps', 'remove', 'google_ads/gone'])).code).toBe(0);
      expect(await states()).toEqual([
        { app: 'kept', expired: true },
        { app: null, expired: false },
      ]);
    },
  );

  it.runIf(ONCE)(
    'refuses a state whose app was disabled, removed or given another client id since: exchanges nothing, stores nothing, uses it up, audits it',
    async () => {
      const v = await vault();
      // Google: a PKCE platform, so that each state holds a code verifier.
      const google = doubles.google as unknown as Double<unknown, unknown>;
      for (const label of ['disabled', 'removed', 'moved'])
        await addAppFor(v, 'google_ads', google, { label });
      const started = {
        disabled: await startAndConsent(v, 'google_ads', 'disabled'),
        removed: await startAndConsent(v, 'google_ads', 'removed'),
        moved: await startAndConsent(v, 'google_ads', 'moved'),
      };
      const verifiers = async () =>
        (
          await v.sql<{ verifier: boolean }>(
            'select code_verifier_enc is not null as verifier from oauth_states order by created_at',
          )
        ).map((s) => s.verifier);
      expect(await verifiers()).toEqual([true, true, true]);
      const changes = [
        ['apps', 'disable', 'google_ads/disabled'],
        ['apps', 'remove', 'google_ads/removed'],
        ['apps', 'update', 'google_ads/moved', '--client-id', 'another-client'],
      ];
      for (const change of changes) {
        const changed = await v.cli(change);
        expect(changed.code, changed.stderr).toBe(0);
        // The removed app's pending state keeps no verifier from the removal on, before any callback.
        if (change[1] === 'remove') expect(await verifiers()).toEqual([true, false, true]);
      }
      const before = doubles.google.tokenRequests().length;

      // Exit 3 (not found) for the removed app, 7 (changed underneath) for the others.
      const cases = [
        ['disabled', 7, 'conflict', '(google_ads/disabled) was disabled since; nothing was stored'],
        ['removed', 3, 'not_found', 'was removed since; nothing was stored'],
        ['moved', 7, 'conflict', '(google_ads/moved) has another client id since; nothing was stored'],
      ] as const;
      for (const [label, exit, code, message] of cases) {
        const refused = await v.cli([
          'connections',
          'complete',
          '--state',
          started[label].state,
          '--callback-url',
          started[label].callbackUrl,
          '--account',
          '1112223334',
          '--json',
        ]);
        expect(refused.code, refused.stderr).toBe(exit);
        const { error } = JSON.parse(refused.stderr) as { error: { code: string; message: string } };
        expect(error.code).toBe(code);
        expect(error.message).toContain(`the app this authorization was started for ${message}`);
      }
      expect(doubles.google.tokenRequests().length).toBe(before);
      const stored = await storedRows(v);
      expect(stored.connections).toEqual([]);
      expect(stored.grants).toBe(0);
      // Each was used up by its refusal (a state is good for one callback), and its verifier is gone.
      expect(stored.states.map((s) => s.used)).toEqual([true, true, true]);
      // The removed app's state outlived it, bound to no app.
      expect(stored.states.map((s) => s.app_id === null)).toEqual([false, true, false]);
      expect(await v.sql('select id from oauth_states where code_verifier_enc is not null')).toEqual([]);
      const denied = await v.sql<{ problem: string }>(
        "select detail->>'problem' as problem from credential_access_audit where action = 'oauth.callback' and outcome = 'denied' order by id",
      );
      expect(denied.map((d) => d.problem)).toEqual(['app disabled', 'app removed', 'client id changed']);
      const audit = await v.cli(['audit', 'verify']);
      expect(audit.code, audit.stderr).toBe(0);

      // Enabled again, the app does not bring the state back.
      expect((await v.cli(['apps', 'enable', 'google_ads/disabled'])).code).toBe(0);
      const again = await v.cli([
        'connections',
        'complete',
        '--state',
        started.disabled.state,
        '--callback-url',
        started.disabled.callbackUrl,
        '--account',
        '1112223334',
      ]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain('already used');
      expect(doubles.google.tokenRequests().length).toBe(before);
    },
  );
});

// PostgreSQL only: the test holds a lock from a connection of its own while the daemon works, which
// the embedded database (one connection, the daemon's) cannot have.
describe.runIf(DB_KIND === 'postgres')('the exchange after the state is used up', () => {
  it('sends the client id and secret the app had when the state was used up, whatever an update commits after', async () => {
    const v = await vault();
    const google = doubles.google;
    const publicHost = 'credvault.example.test';
    const callbackUrl = `https://${publicHost}/v1/integrations/google_ads/callback`;
    const client = google.registerClient({
      clientId: `gap-${Math.random().toString(36).slice(2, 10)}`,
      clientSecret: 'gap-secret-at-the-callback',
      redirectUris: [callbackUrl],
    });
    await addAppFor(v, 'google_ads', google as never, {
      label: 'gap',
      extra: { client_id: client.clientId, client_secret: client.clientSecret, redirect_uri: callbackUrl },
    });
    const operator = await v.json<{ token: string }>([
      'clients',
      'create',
      'op',
      '--role',
      'operator',
      '--all',
    ]);
    const daemon = await startDaemon(v, {
      tcpPort: await freePort(),
      args: ['--public-callback-url', `https://${publicHost}`],
    });
    const locker = postgres(v.databaseUrl!, { max: 1, onnotice: () => {} });
    try {
      const start = await daemon.request('POST', '/v1/integrations/google_ads/connections/start', {
        token: operator.token,
        body: { app: 'gap', accounts: ['111-222-3334'], name: 'gap' },
      });
      expect(start.status, start.body).toBe(201);
      const consent = await fetch(start.json<{ authorize_url: string }>().authorize_url, {
        redirect: 'manual',
      });
      const back = new URL(consent.headers.get('location')!);
      const exchanges = google.tokenRequests('authorization_code').length;

      // The daemon's callback uses the state up, then reads the client that started the flow: with
      // api_clients locked, it waits there, between the two, while the app is changed.
      await locker.unsafe('begin');
      await locker.unsafe('lock table api_clients in access exclusive mode');
      const landing = daemon.request('GET', back.pathname + back.search, { headers: { host: publicHost } });
      const waiting = async () =>
        (await v.sql("select 1 from pg_locks where relation = 'api_clients'::regclass and not granted"))
          .length > 0;
      await until(waiting, { intervalMs: 50 });
      expect(await waiting()).toBe(true);
      expect(await v.sql('select id from oauth_states where used_at is null')).toEqual([]);
      const updated = await v.cli(
        ['apps', 'update', 'google_ads/gap', '--client-id', 'gap-another-client', '--new-client-secret'],
        { input: 'gap-secret-given-later\n' },
      );
      expect(updated.code, updated.stderr).toBe(0);
      await locker.unsafe('commit');

      const landed = await landing;
      const sent = google.tokenRequests('authorization_code').slice(exchanges);
      expect(sent).toHaveLength(1);
      const credentials = (r: (typeof sent)[number]) => [
        r.form?.get('client_id') ?? r.basic?.user,
        r.form?.get('client_secret') ?? r.basic?.pass,
      ];
      expect(credentials(sent[0]!)).toEqual([client.clientId, 'gap-secret-at-the-callback']);
      expect(landed.status, landed.body).toBe(200);
      expect(landed.body).toContain('Connected gap');
    } finally {
      await locker.end();
      await daemon.stop();
    }
  });
});
