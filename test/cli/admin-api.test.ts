import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { validate } from '@readme/openapi-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../src/daemon/admin.js';
import { GOOGLE_ADWORDS_SCOPE, type GoogleDouble, startGoogleDouble } from '../doubles/index.js';
import { type HttpAnswer, type RunningDaemon, startDaemon, untilDraining } from '../helpers/daemon.js';
import { addAppFor, adoptGrant, freePort } from '../helpers/flows.js';
import { createVault, ONCE, type TestVault } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

/**
 * The admin API on a running daemon: every route with every role, bodies that are wrong in each way a
 * client gets them wrong, the connect flow through connections/start and the public callback route,
 * an app made over HTTP used at once by `token get`, the audit trail, and the OpenAPI document.
 */

let vault: TestVault;
let google: GoogleDouble;
let daemon: RunningDaemon;
let port: number;
let appLabel: string;
let appClientId: string;
const PUBLIC_HOST = 'credvault.example.test';
const PUBLIC_URL = `https://${PUBLIC_HOST}`;
const tokens: Record<string, string> = {};
/** Every answer the main daemon gave through `daemon.request`, to check the OpenAPI document against. */
const answered: Array<{ method: string; path: string; status: number; allow: string | undefined }> = [];

/** The daemon, with each answer it gives through request/get written down in `answered`. */
function recording(running: RunningDaemon): RunningDaemon {
  const request: RunningDaemon['request'] = async (method, path, options) => {
    const answer = await running.request(method, path, options);
    answered.push({ method, path, status: answer.status, allow: answer.headers.allow as string | undefined });
    return answer;
  };
  return { ...running, request, get: (path, options) => request('GET', path, options) };
}
/** Connection ids by name. */
const conn: Record<string, string> = {};

async function adopt(name: string, account: string): Promise<string> {
  const grant = google.issueGrant({ clientId: appClientId, scope: GOOGLE_ADWORDS_SCOPE } as never);
  const added = await adoptGrant(vault, 'google_ads', appLabel, grant.refreshToken, {
    accounts: [account],
    name,
    json: true,
  });
  return (JSON.parse(added.stdout) as Array<{ id: string }>)[0]!.id;
}

async function client(name: string, role: string, scope: string[]): Promise<void> {
  const made = await vault.json<{ token: string }>(['clients', 'create', name, '--role', role, ...scope]);
  tokens[name] = made.token;
}

/**
 * A request written on a bare socket, as given (what node:http would not send: no Host, say); `then`,
 * if given, is written once the first answer (an interim 100, say) has arrived. Resolves with what came
 * back once the final answer is complete (by its content-length) or the daemon closed the connection.
 */
function rawRequest(text: string, then?: string): Promise<{ raw: string; status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    let raw = '';
    let sent = false;
    const finish = () => {
      socket.destroy();
      const final = raw.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
      const [head = '', body = ''] = final.split('\r\n\r\n', 2);
      resolve({ raw, status: Number(head.split(' ')[1] ?? 0), body });
    };
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      raw += chunk;
      if (then !== undefined && !sent) {
        sent = true;
        socket.write(then);
        return;
      }
      const final = raw.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
      const length = /\r\ncontent-length: (\d+)\r\n/i.exec(final);
      const end = final.indexOf('\r\n\r\n');
      if (length && end >= 0 && final.length >= end + 4 + Number(length[1])) finish();
    });
    socket.on('end', finish);
    socket.on('error', reject);
  });
}

/**
 * Everything the daemon writes on one connection until it closes it: `text` written at once, then each
 * of `trickle` every 200 ms (a body sent slowly) while the connection is open.
 */
function wholeExchange(text: string, trickle: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    let raw = '';
    const timer = setInterval(() => {
      const next = trickle.shift();
      if (next !== undefined && socket.writable) socket.write(next);
    }, 200);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      raw += chunk;
    });
    socket.on('close', () => {
      clearInterval(timer);
      resolve(raw);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // The daemon may end the connection while the body is still being sent.
      if (error.code !== 'ECONNRESET' && error.code !== 'EPIPE') reject(error);
    });
  });
}

function call(method: string, path: string, as: string | null, body?: unknown): Promise<HttpAnswer> {
  return daemon.request(method, path, { ...(as ? { token: tokens[as]! } : {}), body });
}

beforeAll(async () => {
  vault = await createVault();
  google = await startGoogleDouble();
  // More client accounts the grants reach, so that each revocation below has connections of its own.
  for (const id of ['4567890123', '5678901234', '6789012345', '7890123456']) {
    google.accounts.customers.push({
      id,
      descriptiveName: `Acme ${id.slice(0, 3)}`,
      currencyCode: 'USD',
      timeZone: 'America/New_York',
      manager: false,
      testAccount: false,
      status: 'ENABLED',
    });
    google.accounts.accessible.push(id);
  }
  const app = await addAppFor(vault, 'google_ads', google as never);
  appLabel = app.label;
  appClientId = app.clientId;
  conn.main = await adopt('main', '1234567890');
  conn.other = await adopt('other', '1112223334');
  await client('reader', 'reader', ['--all']);
  await client('operator', 'operator', ['--platform', 'google_ads']);
  await client('admin', 'admin', ['--all']);
  await client('op-main', 'operator', ['--connection', 'main']);
  await client('admin-linkedin', 'admin', ['--platform', 'linkedin_ads']);
  port = await freePort();
  daemon = recording(
    await startDaemon(vault, {
      tcpPort: port,
      args: ['--public-callback-url', PUBLIC_URL],
    }),
  );
});

afterAll(async () => {
  await daemon?.stop();
  await google?.close();
  await vault?.destroy();
});

describe('roles on every route', () => {
  const appBody = (label: string) => ({
    label,
    client_id: `client-${label}`,
    client_secret: `s3cret-${label}-do-not-echo`,
    redirect_uri: 'http://127.0.0.1',
  });
  let made = 0;

  // [method, path, body (or a function making a fresh one), expected status for reader, operator, admin]
  const matrix: Array<[string, string, unknown, [number, number, number]]> = [
    ['GET', '/v1/integrations/platforms', undefined, [200, 200, 200]],
    ['GET', '/openapi.json', undefined, [200, 200, 200]],
    ['GET', '/integrations/platforms', undefined, [200, 200, 200]],
    ['GET', '/v1/integrations/google_ads/capabilities', undefined, [200, 200, 200]],
    ['GET', '/v1/integrations/google_ads/apps', undefined, [403, 403, 200]],
    ['POST', '/v1/integrations/google_ads/apps', () => appBody(`matrix-${++made}`), [403, 403, 201]],
    ['POST', '/v1/integrations/google_ads/connections/start', () => ({ app: appLabel }), [403, 201, 201]],
    ['POST', '/integrations/google_ads/connections/start', () => ({ app: appLabel }), [403, 201, 201]],
    ['GET', '/v1/integrations/google_ads/connections', undefined, [200, 200, 200]],
    ['POST', '/v1/integrations/google_ads/connections/main/refresh', undefined, [403, 200, 200]],
    ['GET', '/v1/clients', undefined, [403, 403, 200]],
    ['POST', '/v1/clients', () => ({ name: `made-${++made}`, role: 'reader', all: true }), [403, 403, 201]],
  ];

  for (const [method, path, body, expected] of matrix) {
    it(`${method} ${path}: reader ${expected[0]}, operator ${expected[1]}, admin ${expected[2]}`, async () => {
      const roles = ['reader', 'operator', 'admin'];
      for (const [i, role] of roles.entries()) {
        const answer = await call(method, path, role, typeof body === 'function' ? body() : body);
        expect(answer.status, `${role}: ${answer.body}`).toBe(expected[i]);
        expect(answer.headers['cache-control']).toBe('no-store');
        expect(answer.headers['access-control-allow-origin']).toBeUndefined();
        if (answer.status === 403) {
          expect(answer.json<{ error: { code: string; message: string } }>().error).toMatchObject({
            code: 'forbidden',
            message: expect.stringContaining(`has role ${role}`),
          });
        }
      }
      const anonymous = await call(method, path, null, typeof body === 'function' ? body() : body);
      expect(anonymous.status).toBe(401);
    });
  }

  it('answers what each role may see, and never a secret', async () => {
    const platforms = (await call('GET', '/v1/integrations/platforms', 'reader')).json<
      Array<{ id: string }>
    >();
    expect(platforms.map((p) => p.id).sort()).toEqual([
      'google_ads',
      'linkedin_ads',
      'microsoft_ads',
      'reddit_ads',
    ]);
    const caps = (await call('GET', '/v1/integrations/linkedin_ads/capabilities', 'reader')).json();
    expect(caps).toMatchObject({
      validate_only: 'simulated',
      keywords: false,
      client_auth: 'client_secret_post',
    });

    const created = await call('POST', '/v1/integrations/google_ads/apps', 'admin', appBody('shown'));
    expect(created.status).toBe(201);
    expect(created.body).not.toContain('s3cret-shown');
    expect(created.json()).toMatchObject({ label: 'shown', has_client_secret: true, platform: 'google_ads' });
    const apps = await call('GET', '/v1/integrations/google_ads/apps', 'admin');
    expect(apps.body).not.toContain('s3cret');
    expect(apps.json<Array<{ label: string }>>().map((a) => a.label)).toContain('shown');

    const start = await call('POST', '/v1/integrations/google_ads/connections/start', 'operator', {
      app: appLabel,
    });
    const started = start.json<{
      authorize_url: string;
      state: string;
      redirect_uri: string;
      app_label: string;
    }>();
    expect(started.app_label).toBe(appLabel);
    expect(new URL(started.authorize_url).searchParams.get('state')).toBe(started.state);

    const madeClient = await call('POST', '/v1/clients', 'admin', {
      name: 'ci-job',
      role: 'reader',
      connections: ['main'],
    });
    const token = madeClient.json<{ token: string; scope: unknown }>();
    expect(token.scope).toEqual({ connections: [conn.main] });
    const listed = await call('GET', '/v1/clients', 'admin');
    expect(listed.body).not.toContain(token.token);
    // The new client works at once, within its scope only.
    expect((await daemon.get(`/v1/connections/main/token`, { token: token.token })).status).toBe(200);
    expect((await daemon.get(`/v1/connections/other/token`, { token: token.token })).status).toBe(403);
    const revoked = await call('POST', '/v1/clients/ci-job/revoke', 'admin');
    expect(revoked.status).toBe(200);
    expect(revoked.json<{ revoked_at: string | null }>().revoked_at).not.toBeNull();
    expect((await daemon.get(`/v1/connections/main/token`, { token: token.token })).status).toBe(401);
    expect((await call('POST', '/v1/clients/ci-job/revoke', 'operator')).status).toBe(403);
  });

  it('keeps each client inside its scope', async () => {
    // Scoped to one connection: it may refresh that one, not another, and may not connect new accounts.
    expect(
      (await call('POST', `/v1/integrations/google_ads/connections/main/refresh`, 'op-main')).status,
    ).toBe(200);
    const other = await call('POST', `/v1/integrations/google_ads/connections/other/refresh`, 'op-main');
    expect(other.status).toBe(403);
    expect(other.json<{ error: { message: string } }>().error.message).toContain(
      'may not act on connection other',
    );
    // Outside its scope, a connection's platform is not told either: the same refusal under any path.
    const elsewhere = await call(
      'POST',
      `/v1/integrations/linkedin_ads/connections/other/refresh`,
      'op-main',
    );
    expect(elsewhere.status).toBe(403);
    expect(elsewhere.body).not.toContain('google_ads');
    expect((await call('POST', '/v1/integrations/google_ads/connections/start', 'op-main', {})).status).toBe(
      403,
    );
    const visible = (await call('GET', '/v1/integrations/google_ads/connections', 'op-main')).json<
      Array<{ id: string }>
    >();
    expect(visible.map((c) => c.id)).toEqual([conn.main]);
    // An admin of LinkedIn only: not Google's apps, and not the clients (they reach every connection).
    expect((await call('GET', '/v1/integrations/google_ads/apps', 'admin-linkedin')).status).toBe(403);
    expect((await call('GET', '/v1/integrations/linkedin_ads/apps', 'admin-linkedin')).status).toBe(200);
    expect((await call('GET', '/v1/clients', 'admin-linkedin')).status).toBe(403);
    // Nor may it make itself more: no client with every connection, no app of another platform, no
    // revoking another admin's client. Each refused, nothing made or changed.
    const escalate = await call('POST', '/v1/clients', 'admin-linkedin', {
      name: 'escalated',
      role: 'admin',
      all: true,
    });
    expect(escalate.status).toBe(403);
    const googleApp = await call(
      'POST',
      '/v1/integrations/google_ads/apps',
      'admin-linkedin',
      appBody('sneaky'),
    );
    expect(googleApp.status).toBe(403);
    expect((await call('POST', '/v1/clients/admin/revoke', 'admin-linkedin')).status).toBe(403);
    const clients = await vault.json<Array<{ name: string; revoked_at: string | null }>>(['clients', 'list']);
    expect(clients.map((c) => c.name)).not.toContain('escalated');
    expect(clients.find((c) => c.name === 'admin')?.revoked_at).toBeNull();
    const apps = await vault.json<Array<{ label: string }>>(['apps', 'list']);
    expect(apps.map((a) => a.label)).not.toContain('sneaky');
    // Google has several apps by now: a start that names none is told which it may name.
    const ambiguous = await call('POST', '/v1/integrations/google_ads/connections/start', 'admin', {});
    expect(ambiguous.status).toBe(400);
    expect(ambiguous.json<{ error: { message: string } }>().error.message).toMatch(
      new RegExp(
        `google_ads has several apps\\. Say which app \\(--app; "app" in the admin API\\): .*${appLabel}`,
      ),
    );
    // A connection of another platform under this platform's path is not found.
    expect((await call('POST', `/v1/integrations/reddit_ads/connections/main/refresh`, 'admin')).status).toBe(
      404,
    );
    // A client scoped to part of the vault cannot tell a connection that does not exist from one
    // outside its scope: both refused alike.
    for (const ref of ['nosuch', 'main'])
      expect(
        (await call('POST', `/v1/integrations/google_ads/connections/${ref}/refresh`, 'admin-linkedin'))
          .status,
        ref,
      ).toBe(403);
  });

  it('revokes within scope: operator and admin each revoke one, reader may not', async () => {
    const a = await adopt('to-revoke-a', '4567890123');
    const b = await adopt('to-revoke-b', '5678901234');
    expect(new Set([a, b, conn.main, conn.other]).size).toBe(4);
    expect((await call('POST', `/v1/integrations/google_ads/connections/${a}/revoke`, 'reader')).status).toBe(
      403,
    );
    const byOperator = await call('POST', `/v1/integrations/google_ads/connections/${a}/revoke`, 'operator');
    expect(byOperator.status).toBe(200);
    expect(byOperator.json()).toMatchObject({
      platform: 'revoked',
      connections: [{ id: a, status: 'revoked' }],
    });
    const byAdmin = await call('POST', `/integrations/google_ads/connections/${b}/revoke`, 'admin');
    expect(byAdmin.status).toBe(200);
    const tokenAfter = await vault.cli(['token', 'get', 'to-revoke-b']);
    expect(tokenAfter.code).toBe(4);
    // The other connections are untouched.
    expect((await vault.cli(['token', 'get', 'main'], { secretOutput: true })).code).toBe(0);
  });

  it('revokes a connection asked ten times at once once: the platform told once, every other answer "already" as a repeat gets', async () => {
    const account = '8901234567';
    google.accounts.customers.push({
      id: account,
      descriptiveName: 'Acme race',
      currencyCode: 'USD',
      timeZone: 'America/New_York',
      manager: false,
      testAccount: false,
      status: 'ENABLED',
    });
    google.accounts.accessible.push(account);
    const id = await adopt('raced', account);
    const told = google.revokeCount;
    const answers = await Promise.all(
      Array.from({ length: 10 }, () =>
        call('POST', `/v1/integrations/google_ads/connections/${id}/revoke`, 'admin'),
      ),
    );
    const seen = answers.map((a) => {
      const body = a.json<{ platform: string; message: string | null; connections: Array<{ id: string }> }>();
      return [a.status, body.platform, body.connections.map((c) => c.id), body.message];
    });
    // Before: the platform was told by each, and the losers answered {"connections":[]}.
    expect(seen.filter(([, platform]) => platform === 'revoked')).toHaveLength(1);
    expect(seen.filter(([, platform]) => platform !== 'revoked')).toEqual(
      Array.from({ length: 9 }, () => [200, 'already', [id], 'this connection was already revoked']),
    );
    expect(google.revokeCount - told).toBe(1);
  });

  it('refuses to revoke a consent that other connections outside the scope share', async () => {
    // One consent, two accounts: two connections on one grant.
    const grant = google.issueGrant({ clientId: appClientId, scope: GOOGLE_ADWORDS_SCOPE } as never);
    const shared = await vault.json<Array<{ id: string; external_account_id: string }>>(
      [
        'connections',
        'add',
        'google_ads',
        '--app',
        appLabel,
        '--account',
        '6789012345',
        '--account',
        '7890123456',
        '--refresh-token-file',
        '-',
      ],
      { input: grant.refreshToken },
    );
    const [x, y] = [shared[0]!.id, shared[1]!.id];
    await client('op-x', 'operator', ['--connection', x]);
    const refused = await call('POST', `/v1/integrations/google_ads/connections/${x}/revoke`, 'op-x');
    expect(refused.status).toBe(403);
    expect(refused.json<{ error: { message: string } }>().error.message).toContain('1 connection outside');
    expect((await vault.cli(['token', 'get', y], { secretOutput: true })).code).toBe(0);
    const allowed = await call('POST', `/v1/integrations/google-ads/connections/${x}/revoke`, 'operator');
    expect(allowed.status).toBe(200);
    expect(
      allowed
        .json<{ connections: Array<{ id: string; status: string }> }>()
        .connections.map((c) => [c.id, c.status])
        .sort(),
    ).toEqual(
      [
        [x, 'revoked'],
        [y, 'revoked'],
      ].sort(),
    );
  });
});

describe('bad requests', () => {
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    daemon.request('POST', path, { token: tokens.admin!, body, headers });
  const message = (answer: HttpAnswer) => answer.json<{ error: { code: string; message: string } }>().error;

  it('names the field that is missing, of the wrong type, or unknown', async () => {
    const missing = await post('/v1/integrations/google_ads/apps', {
      label: 'x1',
      client_secret: 'hush-123',
    });
    expect(missing.status).toBe(400);
    expect(message(missing)).toMatchObject({
      code: 'invalid_input',
      message: expect.stringContaining('client_id'),
    });
    expect(missing.body).not.toContain('hush-123');

    const wrongType = await post('/v1/integrations/google_ads/apps', { label: 'x2', client_id: 5 });
    expect(wrongType.status).toBe(400);
    expect(message(wrongType).message).toMatch(/client_id: .*string/);

    const unknown = await post('/v1/integrations/google_ads/apps', {
      label: 'x3',
      client_id: 'c',
      clientSecret: 'x',
    });
    expect(unknown.status).toBe(400);
    expect(message(unknown).message).toContain('unknown field clientSecret');

    const badAccounts = await post('/v1/integrations/google_ads/connections/start', { accounts: 'some' });
    expect(badAccounts.status).toBe(400);
    expect(message(badAccounts).message).toContain('accounts');

    const badPlatform = await post('/v1/clients', { name: 'x', platforms: ['tiktok_ads'] });
    expect(badPlatform.status).toBe(400);
    expect(message(badPlatform).message).toContain('platforms.0');

    const namedMany = await post('/v1/integrations/google_ads/connections/start', {
      app: appLabel,
      accounts: 'all',
      name: 'one-name',
    });
    expect(namedMany.status).toBe(400);
    expect(message(namedMany).message).toContain('name: a name is for one connection');

    // What could only fail once the person consented is refused before: an id that is none, a name
    // another connection holds.
    const notAnId = await post('/v1/integrations/google_ads/connections/start', {
      app: appLabel,
      accounts: ['abc'],
    });
    expect(notAnId.status).toBe(400);
    expect(message(notAnId).message).toContain('"abc" is not a Google Ads customer id');
    const nameHeld = await post('/v1/integrations/google_ads/connections/start', {
      app: appLabel,
      accounts: ['456-789-0123'],
      name: 'main',
    });
    expect(nameHeld.status).toBe(409);
    expect(message(nameHeld).message).toContain('a connection named "main" already exists');
    // Reconnecting the account that holds the name is what the name is for.
    const reconnect = await post('/v1/integrations/google_ads/connections/start', {
      app: appLabel,
      accounts: ['123-456-7890'],
      name: 'main',
    });
    expect(reconnect.status, reconnect.body).toBe(201);

    const noBody = await daemon.request('POST', '/v1/integrations/google_ads/apps', { token: tokens.admin! });
    expect(noBody.status).toBe(400);
    expect(message(noBody).message).toContain('needs a JSON body');

    const badRole = await post('/v1/clients', { name: 'x', role: 'root', all: true });
    expect(badRole.status).toBe(400);
    expect(message(badRole).message).toContain('role');
  });

  it('takes a platform in a body in its kebab form, as the paths and the CLI do', async () => {
    const kebab = await post('/v1/clients', { name: 'kebab', platforms: ['google-ads', 'LinkedIn-Ads'] });
    expect(kebab.status, kebab.body).toBe(201);
    expect(kebab.json<{ scope: unknown }>().scope).toEqual({ platforms: ['google_ads', 'linkedin_ads'] });
    const unknown = await post('/v1/clients', { name: 'kebab-2', platforms: ['tiktok-ads'] });
    expect(unknown.status).toBe(400);
    expect(message(unknown).message).toMatch(/^platforms\.0: unknown platform "tiktok-ads"\. .*google-ads/);
    // An app file written for the CLI may name its platform, in either form; another platform's is refused.
    const app = (label: string, platform: string) => ({
      label,
      client_id: `client-${label}`,
      client_secret: 'kebab-secret-value',
      redirect_uri: 'http://127.0.0.1',
      platform,
    });
    const made = await post('/v1/integrations/google_ads/apps', app('kebab-app', 'google-ads'));
    expect(made.status, made.body).toBe(201);
    const other = await post('/v1/integrations/google_ads/apps', app('kebab-app-2', 'linkedin-ads'));
    expect(other.status).toBe(400);
    expect(message(other).message).toContain(
      'these app fields are for linkedin_ads, and the app is google_ads',
    );
  });

  it('names the body’s fields, not the CLI’s flags, in what it asks for', async () => {
    const noScope = await post('/v1/clients', { name: 'unscoped', role: 'reader', all: false });
    expect(noScope.status).toBe(400);
    expect(message(noScope).message).toBe(
      'give exactly one of "connections" (a list), "platforms" (a list) and "all": true',
    );
    const badExpiry = await post('/v1/clients', { name: 'expiring', all: true, expires_in: '0s' });
    expect(badExpiry.status).toBe(400);
    expect(message(badExpiry).message).toContain('expires_in');
    const noSecret = await post('/v1/integrations/google_ads/apps', {
      label: 'secretless',
      client_id: 'c',
      redirect_uri: 'http://127.0.0.1',
    });
    expect(noSecret.status).toBe(400);
    expect(message(noSecret).message).toBe(
      'Google Ads apps need a client secret. Give "client_secret" in the JSON body.',
    );
    const noDeveloperToken = await post('/v1/integrations/microsoft_ads/apps', {
      label: 'tokenless',
      client_id: 'c',
      redirect_uri: 'http://127.0.0.1',
    });
    expect(noDeveloperToken.status).toBe(400);
    expect(message(noDeveloperToken).message).toContain(
      'apps need a developer token. Give "developer_token" in the JSON body.',
    );
    const app = {
      label: 'twice',
      client_id: 'c',
      client_secret: 'twice-secret',
      redirect_uri: 'http://127.0.0.1',
    };
    expect((await post('/v1/integrations/google_ads/apps', app)).status).toBe(201);
    const again = await post('/v1/integrations/google_ads/apps', app);
    expect(again.status).toBe(409);
    expect(message(again).message).toContain('Give another "label" in the JSON body');
    for (const answer of [noScope, badExpiry, noSecret, noDeveloperToken, again])
      expect(message(answer).message).not.toMatch(/--[a-z]|terminal/);
    // The command line keeps its own words.
    const cli = await vault.cli(['clients', 'create', 'unscoped']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain(
      'give exactly one of --connection (repeatable), --platform (repeatable) and --all',
    );
  });

  it('refuses a query parameter a route does not take, instead of answering as if it were not there', async () => {
    const filtered = await call('GET', '/v1/connections?platform=google_ads&status=needs_reauth', 'reader');
    expect(filtered.status).toBe(400);
    expect(message(filtered)).toMatchObject({
      code: 'invalid_input',
      message: expect.stringMatching(
        /^unknown query parameters "platform", "status": this route takes none \(.*\/v1\/integrations\/\{platform\}\/connections/,
      ),
    });
    const typo = await call('GET', '/v1/connections/other/token?min-ttl=300', 'reader');
    expect(typo.status).toBe(400);
    expect(message(typo).message).toBe('unknown query parameter "min-ttl": this route takes only min_ttl');
    const admin = await call('GET', '/v1/integrations/google_ads/connections?status=active', 'reader');
    expect(admin.status).toBe(400);
    expect(message(admin).message).toContain('"status"');
    // What a route takes still works; the fixed documents take anything.
    expect((await call('GET', '/v1/connections/other/token?min_ttl=60', 'reader')).status).toBe(200);
    expect((await call('GET', '/v1/connections', 'reader')).status).toBe(200);
    expect((await call('GET', '/metrics?name=x', 'reader')).status).toBe(200);
    expect((await daemon.get('/healthz?probe=1')).status).toBe(200);
    // The admin route's refusal is recorded like any other answer.
    const rows = await vault.json<Array<{ action: string; outcome: string; detail: { status: number } }>>([
      'audit',
      'list',
      '--actor',
      'reader',
      '--limit',
      '5000',
    ]);
    expect(
      rows.some(
        (r) => r.action === 'api.connections.list' && r.outcome === 'failure' && r.detail.status === 400,
      ),
    ).toBe(true);
  });

  it('refuses an unknown platform, a body that is not JSON, an oversized body and an unknown route', async () => {
    const platform = await post('/v1/integrations/tiktok_ads/apps', { label: 'x', client_id: 'c' });
    expect(platform.status).toBe(404);
    expect(message(platform).message).toContain('unknown platform "tiktok_ads"');

    const notJson = await post('/v1/integrations/google_ads/apps', '{"label":', {});
    expect(notJson.status).toBe(400);
    expect(message(notJson).message).toContain('not valid JSON');

    const form = await post('/v1/integrations/google_ads/apps', 'label=x', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    expect(form.status).toBe(415);

    const big = await post('/v1/integrations/google_ads/apps', {
      label: 'big',
      client_id: 'c',
      scopes: ['x'.repeat(70_000)],
    });
    expect(big.status).toBe(413);
    expect(message(big).code).toBe('payload_too_large');

    const wrongMethod = await daemon.request('DELETE', '/v1/integrations/google_ads/apps', {
      token: tokens.admin!,
    });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers['allow']).toBe('GET, POST');
    expect((await call('GET', '/v1/integrations/google_ads/nothing', 'admin')).status).toBe(404);
    // Nothing half-made: none of these apps exists.
    const apps = (await call('GET', '/v1/integrations/google_ads/apps', 'admin')).json<
      Array<{ label: string }>
    >();
    expect(apps.map((a) => a.label).filter((l) => ['x1', 'x2', 'x3', 'big'].includes(l))).toEqual([]);
  });

  it('routes on the request target as written: a path that is not plain (//host, \\, dot-segments, //) is refused with 400, not resolved as a URL', async () => {
    const status = async (target: string) =>
      (
        await rawRequest(
          `GET ${target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${tokens.admin}\r\nConnection: close\r\n\r\n`,
        )
      ).status;
    // Before: 200 with the list or a token (`//evil.example` taken as a host, `\` as `/`, `%2e%2e`
    // resolved away), or 404 for the same path written differently.
    for (const target of [
      '//evil.example/v1/connections',
      '//evil.com/v1/connections/main/token',
      '//v1/connections/main/token',
      '/v1//connections',
      '/v1\\connections\\main\\token',
      '/v1/connections/main/%2e%2e/main/token',
      '/v1/connections/main/%2E./main/token',
      '/v1/connections/main/../main/token',
      '/v1/connections/main/./token',
      '/healthz/../v1/connections',
      '/v1/connections/main/token/..',
      'http://localhost/v1/connections/main/%2e%2e/main/token',
    ])
      expect(await status(target), target).toBe(400);
    expect(await status('/v1/connections/main/token?min_ttl=60')).toBe(200);
    expect(await status('http://localhost/v1/connections')).toBe(200);
  });

  it('stops reading a chunked body at 64 KiB', async () => {
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/integrations/google_ads/apps',
          headers: {
            host: 'localhost',
            authorization: `Bearer ${tokens.admin}`,
            'content-type': 'application/json',
            'transfer-encoding': 'chunked',
          },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.write(`{"label":"chunked","client_id":"c","scopes":["`);
      for (let i = 0; i < 20; i++) req.write('x'.repeat(4096));
      req.end('"]}');
    });
    expect(answer.status).toBe(413);
    expect(answer.body).toContain('larger than 64 KiB');
  });

  it('refuses browsers and foreign hosts on every admin route', async () => {
    for (const route of ROUTES) {
      const path = `/v1${route.path.replace('{platform}', 'google_ads').replace(/\{\w+\}/g, 'main')}`;
      const foreign: Array<Record<string, string>> = [
        { origin: 'https://evil.example' },
        { host: PUBLIC_HOST },
      ];
      for (const headers of foreign) {
        const refused = await daemon.request(route.method, path, { token: tokens.admin!, headers, body: {} });
        expect(refused.status, `${route.method} ${path} ${JSON.stringify(headers)}`).toBe(403);
        expect(refused.headers['cache-control']).toBe('no-store');
      }
    }
  });

  it('answers HTTP as HTTP: HEAD /healthz, 405 with Allow, any case of "Bearer", headers too large', async () => {
    const head = await daemon.request('HEAD', '/healthz');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    const healthz = await daemon.request('DELETE', '/healthz');
    expect(healthz.status).toBe(405);
    expect(healthz.headers['allow']).toBe('GET, HEAD');
    for (const path of ['/metrics', '/v1/connections']) {
      const wrong = await call('POST', path, 'admin');
      expect(wrong.status, path).toBe(405);
      expect(wrong.headers['allow']).toBe('GET, HEAD');
      expect((await daemon.request('HEAD', path, { token: tokens.admin! })).status, path).toBe(200);
    }
    const token = await call('POST', '/v1/connections/main/token', 'admin');
    expect(token.status).toBe(405);
    expect(token.headers['allow']).toBe('GET');
    for (const scheme of ['bearer', 'BEARER']) {
      const listed = await daemon.request('GET', '/v1/connections', {
        headers: { authorization: `${scheme} ${tokens.reader}` },
      });
      expect(listed.status, scheme).toBe(200);
    }
    // Node's parser refuses it before any handler: still JSON, still no-store.
    const huge = await daemon.request('GET', '/v1/connections', {
      token: tokens.admin!,
      headers: { 'x-padding': 'x'.repeat(20_000) },
    });
    expect(huge.status).toBe(431);
    expect(huge.headers['cache-control']).toBe('no-store');
    expect(huge.json<{ error: { code: string } }>().error.code).toBe('invalid_input');
  });
  it('answers a request without Host, or with an Expect header, as every other: JSON and no-store (not Node’s bare 400 and 417)', async () => {
    const noHost = await rawRequest('GET /healthz HTTP/1.1\r\n\r\n');
    expect(noHost.status, noHost.raw).toBe(403);
    expect(noHost.raw).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(JSON.parse(noHost.body)).toMatchObject({
      error: { code: 'forbidden', message: expect.stringContaining('--allowed-host') },
    });

    const expectation = await rawRequest(
      `GET /v1/connections HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${tokens.reader}\r\nExpect: foo\r\n\r\n`,
    );
    expect(expectation.status, expectation.raw).toBe(417);
    expect(expectation.raw).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(JSON.parse(expectation.body)).toMatchObject({
      error: { code: 'expectation_failed', message: expect.stringContaining('100-continue') },
    });

    // Expect: 100-continue: a request refused before its body is read gets its answer at once, without
    // being asked for the body; one that reads it is asked, and answered once it came.
    const body = JSON.stringify({ name: 'continued', role: 'reader', all: true });
    const head = (token: string) =>
      `POST /v1/clients HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`;
    const refused = await rawRequest(head('cvc_unknown'));
    expect(refused.status, refused.raw).toBe(401);
    expect(refused.raw).not.toContain('100 Continue');
    const made = await rawRequest(head(tokens.admin!), body);
    expect(made.raw).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /);
    expect(JSON.parse(made.body)).toMatchObject({ name: 'continued', role: 'reader' });
  });
  it('answers a client whose headers never finish with 408 after about 5 s (not up to 35 s)', async () => {
    const started = Date.now();
    const slow = await rawRequest(
      `GET /v1/connections HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${tokens.reader}\r\n`,
    );
    expect(slow.status, slow.raw).toBe(408);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(slow.raw).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(JSON.parse(slow.body)).toMatchObject({ error: { code: 'request_timeout' } });
  }, 45_000);
});

describe('one answer per request', () => {
  it('a request refused before its body came (no token) is answered once, Connection: close, and not again with 408 when the body never ends', async () => {
    for (const head of [
      'POST /v1/clients HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n',
      'POST /v1/clients HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer cvc_bad\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
    ]) {
      const chunked = head.includes('chunked');
      const raw = await wholeExchange(
        head,
        Array.from({ length: 90 }, () => (chunked ? '1\r\n \r\n' : ' ')),
      );
      // Before: 401 with Connection: keep-alive at once, then, on the same socket, 408 at about 16 s.
      expect(raw.match(/HTTP\/1\.1 \d{3} /g), raw).toEqual(['HTTP/1.1 401 ']);
      const answerHead = raw.split('\r\n\r\n')[0]!;
      expect(answerHead).toMatch(/\r\nconnection: close\r\n/i);
      expect(answerHead).toMatch(/\r\ncache-control: no-store\r\n/i);
    }
  }, 45_000);

  it('answers CONNECT as a method no path has (405, JSON, no-store), not by closing the socket in silence', async () => {
    const raw = await wholeExchange(
      `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${tokens.admin}\r\n\r\n`,
    );
    // Before: nothing at all.
    expect(raw.match(/HTTP\/1\.1 \d{3} /g), raw).toEqual(['HTTP/1.1 405 ']);
    expect(raw).toMatch(/\r\nallow: GET, HEAD, POST\r\n/i);
    expect(raw).toMatch(/\r\ncache-control: no-store\r\n/i);
    expect(raw).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(raw.split('\r\n\r\n')[1]!)).toMatchObject({ error: { code: 'method_not_allowed' } });
  });
});

describe('connecting through the daemon', () => {
  it('connections/start, the browser at the platform, the public callback route: the connection exists', async () => {
    const callbackUrl = `${PUBLIC_URL}/v1/integrations/google_ads/callback`;
    // The person who consents can reach one more account than the grants so far: Acme JP.
    google.accounts.accessible.push('2345678901');
    const registered = google.registerClient({
      clientId: 'daemon-hosted-app',
      clientSecret: 'daemon-hosted-secret-value',
      redirectUris: [callbackUrl],
    });
    const created = await call('POST', '/v1/integrations/google_ads/apps', 'admin', {
      label: 'hosted',
      client_id: registered.clientId,
      client_secret: 'daemon-hosted-secret-value',
      developer_token: 'hosted-dev-token-value',
      redirect_uri: callbackUrl,
      authorize_url: google.endpoints.authorize,
      token_url: google.endpoints.token,
      revoke_url: google.endpoints.revoke!,
      api_base_url: google.url,
    });
    expect(created.status, created.body).toBe(201);

    const start = await call('POST', '/v1/integrations/google_ads/connections/start', 'operator', {
      app: 'hosted',
      accounts: ['234-567-8901'],
      name: 'acme-jp',
    });
    expect(start.status, start.body).toBe(201);
    const { authorize_url, state } = start.json<{ authorize_url: string; state: string }>();

    // The person consents at the platform, which sends the browser to the public callback URL; the
    // proxy in front of the daemon passes the public Host along.
    const consent = await fetch(authorize_url, { redirect: 'manual' });
    const location = new URL(consent.headers.get('location')!);
    expect(location.origin).toBe(PUBLIC_URL);
    const visit = (path: string) =>
      daemon.request('GET', path, {
        headers: { host: PUBLIC_HOST, 'user-agent': 'Mozilla/5.0 test' },
      });
    const landed = await visit(location.pathname + location.search);
    expect(landed.status, landed.body).toBe(200);
    expect(landed.headers['content-type']).toContain('text/html');
    expect(landed.headers['referrer-policy']).toBe('no-referrer');
    expect(landed.body).toContain('Google Ads connected');
    expect(landed.body).toContain('Connected acme-jp');
    expect(landed.body).not.toContain(location.searchParams.get('code')!);

    const listed = await vault.json<
      Array<{ name: string; external_account_id: string; connected_by: string }>
    >(['connections', 'list']);
    expect(listed.find((c) => c.name === 'acme-jp')).toMatchObject({
      external_account_id: '2345678901',
      connected_by: 'operator',
    });
    const token = await vault.cli(['token', 'get', 'acme-jp'], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);
    expect(google.accessTokens.has(token.stdout.trim())).toBe(true);

    // The state was used up: the same callback again stores nothing.
    const again = await visit(location.pathname + location.search);
    expect(again.status).toBe(400);
    expect(again.body).toContain('already used');
    // A made-up state, and a denial at the platform, store nothing either.
    const unknown = await visit(`/v1/integrations/google_ads/callback?state=${'x'.repeat(43)}&code=abc`);
    expect(unknown.status).toBe(400);
    expect(unknown.body).toContain('unknown state');
    // Advice for the person in the browser, not a command for an operator's terminal.
    expect(unknown.body).toContain('Ask whoever sent you the sign-in link to start the connection again');
    expect(unknown.body).not.toContain('credvault connect');
    const second = await call('POST', '/integrations/google_ads/connections/start', 'operator', {
      app: 'hosted',
    });
    const denied = await visit(
      `/integrations/google_ads/callback?state=${second.json<{ state: string }>().state}&error=access_denied`,
    );
    expect(denied.status).toBe(403);
    expect(denied.body).toContain('access was denied');
    expect(state).not.toBe(second.json<{ state: string }>().state);
    // The public Host opens the callback route only.
    const other = await visit('/v1/integrations/platforms');
    expect(other.status).toBe(403);
  });

  it('finishes at the callback only flows the daemon started, for their platform, while their starter may', async () => {
    const visit = (path: string, host = PUBLIC_HOST) => daemon.request('GET', path, { headers: { host } });
    const start = async (as: string) =>
      (await call('POST', '/v1/integrations/google_ads/connections/start', as, { app: 'hosted' })).json<{
        state: string;
      }>().state;

    const state = await start('operator');
    // The state alone (no code, no error) is no answer: refused, and not used up.
    const bare = await visit(`/v1/integrations/google_ads/callback?state=${state}`);
    expect(bare.status).toBe(400);
    expect(bare.body).toContain('carries no answer from the platform');
    // A state from another platform's path: refused, and the state is still good for its own platform.
    const elsewhere = await visit(`/v1/integrations/linkedin_ads/callback?state=${state}&code=abc`);
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body).toContain('started for another platform');
    // A Host that is neither the public one nor loopback.
    const foreign = await visit(
      `/v1/integrations/google_ads/callback?state=${state}&code=abc`,
      'evil.example',
    );
    expect(foreign.status).toBe(403);

    // The starter revoked between the start and the callback: nothing is stored.
    await client('short-lived', 'operator', ['--platform', 'google_ads']);
    const late = await start('short-lived');
    expect((await call('POST', '/v1/clients/short-lived/revoke', 'admin')).status).toBe(200);
    const consent = await fetch(
      (await call('POST', '/v1/integrations/google_ads/connections/start', 'operator', { app: 'hosted' }))
        .json<{ authorize_url: string }>()
        .authorize_url.replace(/state=[^&]+/, `state=${late}`),
      { redirect: 'manual' },
    );
    const back = new URL(consent.headers.get('location')!);
    const before = await vault.json<unknown[]>(['connections', 'list']);
    const refused = await visit(back.pathname + back.search);
    expect(refused.status).toBe(403);
    expect(refused.body).toContain('short-lived');
    expect(refused.body).toContain('nothing was stored');
    expect(await vault.json<unknown[]>(['connections', 'list'])).toHaveLength(before.length);

    // A flow started by the CLI (not through the daemon) is not finished by the public callback.
    const cliStart = await vault.json<{ state: string }>([
      'connections',
      'start',
      'google_ads',
      '--app',
      'hosted',
    ]);
    const notOurs = await visit(`/v1/integrations/google_ads/callback?state=${cliStart.state}&code=abc`);
    expect(notOurs.status).toBe(400);
    expect(notOurs.body).toContain('not started through the daemon');

    // Made-up states from the internet leave no audit rows.
    const rowsBefore = (await vault.json<unknown[]>(['audit', 'list', '--limit', '5000'])).length;
    for (let i = 0; i < 3; i++)
      await visit(`/v1/integrations/google_ads/callback?state=${'z'.repeat(40)}${i}&code=x`);
    expect((await vault.json<unknown[]>(['audit', 'list', '--limit', '5000'])).length).toBe(rowsBefore);
  });

  it('answers nothing but the callback to requests a proxy forwarded', async () => {
    const proxied = await daemon.request('GET', '/v1/integrations/platforms', {
      token: tokens.admin!,
      headers: { 'x-forwarded-for': '203.0.113.7' },
    });
    expect(proxied.status).toBe(403);
    expect(proxied.body).toContain('--allow-remote');
    const token = await daemon.request('GET', '/v1/connections/main/token', {
      token: tokens.reader!,
      headers: { forwarded: 'for=203.0.113.7' },
    });
    expect(token.status).toBe(403);
    const health = await daemon.request('GET', '/healthz', { headers: { 'x-forwarded-for': '203.0.113.7' } });
    expect(health.status).toBe(200);
  });

  it('an app made over HTTP serves tokens at once, without a restart', async () => {
    const created = await call('POST', '/integrations/google_ads/apps', 'admin', {
      label: 'hot',
      client_id: appClientId,
      client_secret: google.defaultClient!.clientSecret!,
      developer_token: 'hot-dev-token-value',
      redirect_uri: 'http://127.0.0.1',
      authorize_url: google.endpoints.authorize,
      token_url: google.endpoints.token,
      api_base_url: google.url,
    });
    expect(created.status, created.body).toBe(201);
    const grant = google.issueGrant({ clientId: appClientId, scope: GOOGLE_ADWORDS_SCOPE } as never);
    const added = await vault.cli(
      [
        'connections',
        'add',
        'google_ads',
        '--app',
        'hot',
        '--account',
        '1234567890',
        '--name',
        'hot-conn',
        '--refresh-token-file',
        '-',
      ],
      { input: grant.refreshToken },
    );
    expect(added.code, added.stderr).toBe(0);
    const viaCli = await vault.cli(['token', 'get', 'hot-conn'], { secretOutput: true });
    expect(viaCli.code, viaCli.stderr).toBe(0);
    const viaHttp = await daemon.get('/v1/connections/hot-conn/token', { token: tokens.reader! });
    expect(viaHttp.status).toBe(200);
    expect(viaHttp.json<{ access_token: string }>().access_token).toBe(viaCli.stdout.trim());
    // The daemon itself refreshes through the new app (its client secret, read at once), and serves
    // the new token.
    const refreshesBefore = google.refreshCount;
    const refreshed = await call('POST', '/v1/integrations/google_ads/connections/hot-conn/refresh', 'admin');
    expect(refreshed.status, refreshed.body).toBe(200);
    expect(google.refreshCount).toBe(refreshesBefore + 1);
    const fresh = await daemon.get('/v1/connections/hot-conn/token', { token: tokens.reader! });
    expect(fresh.status, fresh.body).toBe(200);
    const served = fresh.json<{ access_token: string }>().access_token;
    expect(served).not.toBe(viaCli.stdout.trim());
    expect(google.accessTokens.has(served)).toBe(true);
  });
});

describe('audit and documentation', () => {
  it('records every admin call with the client that made it, refusals included', async () => {
    const rows = await vault.json<
      Array<{ action: string; actor: string; outcome: string; detail: { status: number } }>
    >(['audit', 'list', '--limit', '2000']);
    const api = rows.filter((r) => r.action.startsWith('api.'));
    const seen = (actor: string, action: string, outcome: string) =>
      api.some((r) => r.actor === actor && r.action === action && r.outcome === outcome);
    expect(seen('reader', 'api.apps.list', 'denied')).toBe(true);
    expect(seen('admin', 'api.apps.list', 'success')).toBe(true);
    expect(seen('admin', 'api.apps.create', 'success')).toBe(true);
    expect(seen('admin', 'api.apps.create', 'failure')).toBe(true);
    expect(seen('operator', 'api.connections.start', 'success')).toBe(true);
    expect(seen('op-main', 'api.connections.refresh', 'denied')).toBe(true);
    expect(seen('operator', 'api.connections.revoke', 'success')).toBe(true);
    expect(seen('admin', 'api.clients.create', 'success')).toBe(true);
    expect(seen('reader', 'api.platforms.list', 'success')).toBe(true);
    // Every route of the API left at least one row of a successful call.
    for (const route of ROUTES)
      expect(
        api.some((r) => r.action === `api.${route.id}` && r.outcome === 'success'),
        route.id,
      ).toBe(true);
    // The services' own rows carry the client's name too: the app it made, the connection it revoked.
    expect(rows.some((r) => r.action === 'app.create' && r.actor === 'admin')).toBe(true);
    expect(rows.some((r) => r.action === 'oauth.start' && r.actor === 'operator')).toBe(true);
    expect(JSON.stringify(rows)).not.toMatch(/s3cret|daemon-hosted-secret-value|hot-dev-token-value/);
    const verify = await vault.cli(['audit', 'verify']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(daemon.logs()).not.toMatch(/s3cret|daemon-hosted-secret-value|hot-dev-token-value/);
  });

  it('records the calls that left no trace: the OpenAPI document, a 405, and a refusal whatever body came with it', async () => {
    await client('auditee', 'reader', ['--all']);
    expect((await call('GET', '/openapi.json', 'auditee')).status).toBe(200);
    const wrongMethod = await call('DELETE', '/v1/integrations/google_ads/apps', 'auditee');
    expect(wrongMethod.status).toBe(405);
    expect((await call('PUT', '/v1/connections/main/token', 'auditee')).status).toBe(405);
    // A reader may not make clients: refused as such (403, denied), the oversized body never read…
    const big = await call('POST', '/v1/clients', 'auditee', { name: 'x'.repeat(70_000), all: true });
    expect(big.status, big.body).toBe(403);
    expect(big.json<{ error: { code: string } }>().error.code).toBe('forbidden');
    // …nor asked for, when the client waits for 100 Continue.
    const body = JSON.stringify({ name: 'continued-2', all: true });
    const waiting = await rawRequest(
      `POST /v1/clients HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${tokens.auditee}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    );
    expect(waiting.status, waiting.raw).toBe(403);
    expect(waiting.raw).not.toContain('100 Continue');

    const rows = await vault.json<
      Array<{ action: string; outcome: string; detail: { status: number; allow?: string; path: string } }>
    >(['audit', 'list', '--actor', 'auditee']);
    const seen = rows
      .map((r) => [r.action, r.outcome, r.detail.status, r.detail.allow ?? r.detail.path] as const)
      .sort();
    expect(seen).toEqual(
      [
        ['api.openapi', 'success', 200, '/openapi.json'],
        ['api.method_not_allowed', 'failure', 405, 'GET, POST'],
        ['api.method_not_allowed', 'failure', 405, 'GET'],
        ['api.clients.create', 'denied', 403, '/clients'],
        ['api.clients.create', 'denied', 403, '/clients'],
      ].sort(),
    );
  });

  it('records a scoped client asking for a token of a connection that does not exist, refused as one outside its scope (403)', async () => {
    await client('prober', 'reader', ['--platform', 'linkedin_ads']);
    const asked = ['nope-1', 'google_ads:999', conn.main!];
    for (const ref of asked) {
      const answer = await daemon.request('GET', `/v1/connections/${encodeURIComponent(ref)}/token`, {
        token: tokens.prober!,
        headers: { 'user-agent': 'probe/1.0' },
      });
      expect(answer.status, ref).toBe(403);
      expect(answer.json<{ error: { message: string } }>().error.message).toBe(
        `client prober may not read connection ${ref}`,
      );
    }
    const rows = await vault.json<
      Array<{
        action: string;
        outcome: string;
        target_id: string | null;
        client_address: string | null;
        user_agent: string | null;
        detail: { error?: string; ref?: string };
      }>
    >(['audit', 'list', '--actor', 'prober', '--action', 'token.serve']);
    // Before: only the existing connection's refusal (main, a Google Ads one) was on record.
    expect(rows.map((r) => [r.outcome, r.detail.error, r.detail.ref ?? r.target_id]).sort()).toEqual(
      [
        ['denied', 'forbidden', 'nope-1'],
        ['denied', 'forbidden', 'google_ads:999'],
        ['denied', 'forbidden', conn.main],
      ].sort(),
    );
    for (const row of rows) {
      expect(row.client_address).toBe('127.0.0.1');
      expect(row.user_agent).toBe('probe/1.0');
    }
  });

  it('answers an admin client that revokes itself with the revoked client (200), recorded as a success', async () => {
    await client('self-revoker', 'admin', ['--all']);
    const answer = await call('POST', '/v1/clients/self-revoker/revoke', 'self-revoker');
    // Before: 401 "revoked or expired while its request was in flight", recorded as a failure.
    expect(answer.status, answer.body).toBe(200);
    expect(answer.json()).toMatchObject({ name: 'self-revoker', revoked_at: expect.any(String) });
    expect((await call('GET', '/v1/connections', 'self-revoker')).status).toBe(401);
    const rows = await vault.json<Array<{ action: string; outcome: string; detail: { status?: number } }>>([
      'audit',
      'list',
      '--actor',
      'self-revoker',
    ]);
    expect(rows.map((r) => [r.action, r.outcome, r.detail.status ?? null]).sort()).toEqual(
      [
        ['api.clients.revoke', 'success', 200],
        ['client.revoke', 'success', null],
      ].sort(),
    );
  });

  it('serves an OpenAPI document that a parser accepts and that names every route', async () => {
    const answer = await call('GET', '/openapi.json', 'reader');
    expect(answer.status).toBe(200);
    const doc = answer.json<{ paths: Record<string, Record<string, { 'x-credvault-role'?: string }>> }>();
    const result = await validate(structuredClone(doc) as never);
    expect(result.valid, JSON.stringify(result)).toBe(true);
    for (const path of [
      '/v1/integrations/platforms',
      '/integrations/platforms',
      '/v1/integrations/{platform}/capabilities',
      '/v1/integrations/{platform}/apps',
      '/v1/integrations/{platform}/connections/start',
      '/v1/integrations/{platform}/callback',
      '/v1/integrations/{platform}/connections',
      '/v1/integrations/{platform}/connections/{id}/refresh',
      '/v1/integrations/{platform}/connections/{id}/revoke',
      '/v1/connections/{id}/token',
    ]) {
      expect(Object.keys(doc.paths)).toContain(path);
    }
    expect(doc.paths['/v1/integrations/{platform}/apps']!.post!['x-credvault-role']).toBe('admin');
  });

  it('documents every answer the daemon gave in this file, and bodies as optional where they are', async () => {
    // A few the other tests do not provoke: a body where a route takes none, a start and a refresh
    // without one.
    const admin = (method: string, path: string, body?: unknown) =>
      daemon.request(method, path, { token: tokens.admin!, body });
    expect((await admin('POST', '/v1/clients/nobody/revoke', { force: true })).status).toBe(400);
    expect((await admin('POST', '/v1/clients/nobody/revoke')).status).toBe(404);
    const refreshed = await admin('POST', '/v1/integrations/google_ads/connections/other/refresh');
    expect(refreshed.status, refreshed.body).toBe(200);
    const started = await admin('POST', '/v1/integrations/google_ads/connections/start');
    expect(started.body).not.toContain('needs a JSON body');
    expect((await admin('GET', '/v1/integrations/%E0%A4%A/capabilities')).status).toBe(400);

    const doc = (await call('GET', '/openapi.json', 'reader')).json<{
      info: { description: string };
      paths: Record<
        string,
        Record<string, { responses: Record<string, unknown>; requestBody?: { required: boolean } }>
      >;
    }>();
    const templates = Object.keys(doc.paths).map((template) => ({
      template,
      pattern: new RegExp(`^${template.replace(/[.]/g, '\\.').replace(/\{\w+\}/g, '[^/]+')}$`),
    }));
    const statuses = new Set<number>();
    for (const { method, path, status, allow } of answered) {
      const what = `${method} ${path} ${status}`;
      statuses.add(status);
      const operations =
        doc.paths[templates.find((t) => t.pattern.test(path.split('?')[0]!))?.template ?? ''];
      if (!operations) {
        expect(status, what).toBe(404);
        continue;
      }
      if (status === 405) {
        // The path's documented methods, and HEAD beside GET where the daemon answers it.
        const documented = Object.keys(operations).map((m) => m.toUpperCase());
        const allowed = (allow ?? '').split(', ');
        expect(
          documented.every((m) => allowed.includes(m)),
          what,
        ).toBe(true);
        expect(
          allowed.filter((m) => !documented.includes(m) && m !== 'HEAD'),
          what,
        ).toEqual([]);
        expect(doc.info.description).toContain('405 with Allow');
        continue;
      }
      if (status === 431) {
        expect(doc.info.description).toContain('431');
        continue;
      }
      const operation = operations[method === 'HEAD' ? 'get' : method.toLowerCase()];
      expect(operation, what).toBeDefined();
      expect(Object.keys(operation!.responses), what).toContain(String(status));
    }
    // The check above saw the answers that were missing from the document.
    for (const status of [200, 201, 400, 401, 403, 404, 405, 409, 413, 415])
      expect(statuses).toContain(status);
    const body = (path: string) => doc.paths[path]!.post!.requestBody!.required;
    expect(body('/v1/integrations/{platform}/connections/start')).toBe(false);
    expect(body('/v1/integrations/{platform}/connections/{id}/refresh')).toBe(false);
    expect(body('/v1/integrations/{platform}/apps')).toBe(true);
    expect(body('/v1/clients')).toBe(true);
  });
});

// Which routes exist is the daemon's choice, not its database's.
describe.runIf(ONCE)('without --public-callback-url', () => {
  it('the callback route does not exist', async () => {
    const v = await createVault();
    const d = await startDaemon(v, { name: 'plain' });
    try {
      const answer = await d.get('/v1/integrations/google_ads/callback?state=abc&code=def');
      expect(answer.status).toBe(404);
      expect(answer.body).toContain('--public-callback-url');
    } finally {
      await d.stop();
      await v.destroy();
    }
  });
});

describe('with the audit log read-only', () => {
  it('answers no call it cannot record, the OpenAPI document included (fail closed)', async () => {
    const v = await createVault();
    const reader = await v.json<{ token: string }>(['clients', 'create', 'r', '--all']);
    await v.refuseAuditWrites();
    const d = await startDaemon(v, { name: 'read-only-audit' });
    try {
      for (const path of ['/openapi.json', '/v1/integrations/platforms']) {
        const answer = await d.get(path, { token: reader.token });
        expect(answer.status, path).toBeGreaterThanOrEqual(500);
        expect(answer.body, path).not.toContain('openapi');
        expect(answer.body, path).not.toContain('google_ads');
      }
    } finally {
      await d.stop();
      await v.destroy();
    }
  });
});

describe('a daemon shutting down', () => {
  it('still completes an OAuth callback that arrives while it drains, then exits 0', async () => {
    const v = await createVault();
    const g = await startGoogleDouble();
    let d: RunningDaemon | undefined;
    try {
      const callbackUrl = `${PUBLIC_URL}/v1/integrations/google_ads/callback`;
      g.registerClient({
        clientId: 'drain-app',
        clientSecret: 'drain-secret-value',
        redirectUris: [callbackUrl],
      });
      const app = await addAppFor(v, 'google_ads', g as never, {
        extra: { client_id: 'drain-app', client_secret: 'drain-secret-value', redirect_uri: callbackUrl },
      });
      const grant = g.issueGrant({ clientId: 'drain-app', scope: GOOGLE_ADWORDS_SCOPE } as never);
      const adopted = await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['1234567890'],
        name: 'due',
      });
      expect(adopted.code, adopted.stderr).toBe(0);
      const operator = await v.json<{ token: string }>([
        'clients',
        'create',
        'op',
        '--role',
        'operator',
        '--all',
      ]);
      // Due for the sweep, at a platform slow enough that the refresh is still in flight at SIGTERM.
      await v.sql(
        "update oauth_tokens_vault set access_token_expires_at = now() + interval '1 minute', last_refreshed_at = now() - interval '59 minutes'",
      );
      g.faults.latencyMs = 3000;
      const attempts = g.refreshAttempts;
      d = await startDaemon(v, {
        tcpPort: await freePort(),
        args: ['--public-callback-url', PUBLIC_URL, '--refresh-window', '30m'],
      });
      const started = await d.request('POST', '/v1/integrations/google_ads/connections/start', {
        token: operator.token,
        body: { app: app.label, accounts: ['111-222-3334'], name: 'late' },
      });
      expect(started.status, started.body).toBe(201);
      const consent = await fetch(started.json<{ authorize_url: string }>().authorize_url, {
        redirect: 'manual',
      });
      const location = new URL(consent.headers.get('location')!);
      await until(() => g.refreshAttempts !== attempts);
      expect(g.refreshAttempts).toBe(attempts + 1);

      d.child.kill('SIGTERM');
      const health = await untilDraining(d);
      expect(health.json()).toMatchObject({ shutting_down: true });
      // Draining: new work is refused, the person's browser coming back from the platform is not.
      const refused = await d.request('GET', '/v1/connections', { token: operator.token });
      expect(refused.status).toBe(503);
      const landed = await d.request('GET', location.pathname + location.search, {
        headers: { host: PUBLIC_HOST, 'user-agent': 'Mozilla/5.0 test' },
      });
      expect(landed.status, landed.body).toBe(200);
      expect(landed.body).toContain('Connected late');
      expect(await d.exited).toBe(0);
      d = undefined;
      const listed = await v.json<Array<{ name: string; external_account_id: string }>>([
        'connections',
        'list',
      ]);
      expect(listed.map((c) => [c.name, c.external_account_id]).sort()).toEqual([
        ['due', '1234567890'],
        ['late', '1112223334'],
      ]);
    } finally {
      await d?.stop();
      await g.close();
      await v.destroy();
    }
  });
});
