import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Double } from '../doubles/common.js';
import { pkceS256 } from '../doubles/common.js';
import { GOOGLE_ADWORDS_SCOPE, type GoogleDouble, startGoogleDouble } from '../doubles/google.js';
import { startAllDoubles } from '../doubles/index.js';
import { type LinkedInDouble, startLinkedInDouble } from '../doubles/linkedin.js';
import { MICROSOFT_ADS_SCOPE, type MicrosoftDouble, startMicrosoftDouble } from '../doubles/microsoft.js';
import { REDDIT_TEST_USER_AGENT, type RedditDouble, startRedditDouble } from '../doubles/reddit.js';

const UA = { 'user-agent': REDDIT_TEST_USER_AGENT };
const MS_SCOPE = `${MICROSOFT_ADS_SCOPE} offline_access`;
const VERIFIER = 'a'.repeat(20) + 'b'.repeat(23) + '-._~0123456789';

function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

interface Body {
  [key: string]: unknown;
}

async function post(url: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    body: new URLSearchParams(form),
    headers,
    redirect: 'manual',
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: (text ? JSON.parse(text) : null) as Body };
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers, redirect: 'manual' });
  const text = await res.text();
  let body: Body | null = null;
  try {
    body = JSON.parse(text) as Body;
  } catch {
    body = null;
  }
  return { status: res.status, headers: res.headers, text, body };
}

/** Runs the authorization request and returns the redirect target. */
async function authorize<A, S>(
  double: Double<A, S>,
  params: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<URL> {
  const client = double.defaultClient!;
  const query = new URLSearchParams({
    client_id: client.clientId,
    redirect_uri: client.redirectUris[0]!,
    response_type: 'code',
    state: 'st-123 /+=',
    ...params,
  });
  const res = await fetch(`${double.endpoints.authorize}?${query}`, { redirect: 'manual', headers });
  expect(res.status).toBe(302);
  return new URL(res.headers.get('location')!);
}

async function codeFor<A, S>(
  double: Double<A, S>,
  params: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<string> {
  const location = await authorize(double, params, headers);
  return location.searchParams.get('code')!;
}

describe('Google double', () => {
  let g: GoogleDouble;
  const client = () => g.defaultClient!;
  const creds = () => ({ client_id: client().clientId, client_secret: client().clientSecret! });
  const redirectUri = 'http://127.0.0.1:54321/';
  const offline = {
    scope: GOOGLE_ADWORDS_SCOPE,
    access_type: 'offline',
    prompt: 'consent',
    redirect_uri: redirectUri,
  };

  beforeAll(async () => {
    g = await startGoogleDouble();
  });
  afterAll(() => g.close());

  it('redirects with code and unchanged state on any loopback port; refuses unknown redirects', async () => {
    const location = await authorize(g, offline);
    expect(location.origin + location.pathname).toBe(redirectUri);
    expect(location.searchParams.get('state')).toBe('st-123 /+=');
    expect(location.searchParams.get('code')).toMatch(/^4\/0A/);
    const badQuery = new URLSearchParams({
      client_id: client().clientId,
      redirect_uri: 'http://evil.example/cb',
      response_type: 'code',
      state: 's',
      scope: GOOGLE_ADWORDS_SCOPE,
    });
    const bad = await get(`${g.endpoints.authorize}?${badQuery}`);
    expect(bad.status).toBe(400);
    expect(bad.headers.get('location')).toBeNull();
    expect(bad.text).toContain('redirect_uri_mismatch');
  });

  it('binds PKCE S256 and refuses a wrong verifier; refresh answers no refresh_token', async () => {
    const code = await codeFor(g, {
      ...offline,
      code_challenge: pkceS256(VERIFIER),
      code_challenge_method: 'S256',
    });
    const common = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...creds() };
    const wrong = await post(g.endpoints.token, { ...common, code_verifier: `${VERIFIER}x` });
    expect(wrong.status).toBe(400);
    expect(wrong.body).toEqual({ error: 'invalid_grant', error_description: 'Invalid code verifier.' });
    const ok = await post(g.endpoints.token, { ...common, code_verifier: VERIFIER });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ token_type: 'Bearer', expires_in: 3599, scope: GOOGLE_ADWORDS_SCOPE });
    expect(ok.body['access_token']).toMatch(/^ya29\./);
    expect(ok.body['refresh_token']).toMatch(/^1\/\//);
    const refreshed = await post(g.endpoints.token, {
      grant_type: 'refresh_token',
      refresh_token: String(ok.body['refresh_token']),
      ...creds(),
    });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body).not.toHaveProperty('refresh_token');
    expect(refreshed.body).toMatchObject({ token_type: 'Bearer', expires_in: 3599 });
  });

  it('returns a refresh token only with access_type=offline', async () => {
    const code = await codeFor(g, { scope: GOOGLE_ADWORDS_SCOPE, redirect_uri: redirectUri });
    const res = await post(g.endpoints.token, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri,
      ...creds(),
    });
    expect(res.status).toBe(200);
    expect(res.body).not.toHaveProperty('refresh_token');
  });

  it('refuses a reused code and revokes what the code issued', async () => {
    const code = await codeFor(g, offline);
    const form = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...creds() };
    const first = await post(g.endpoints.token, form);
    expect(first.status).toBe(200);
    const again = await post(g.endpoints.token, form);
    expect(again.status).toBe(400);
    expect(again.body['error']).toBe('invalid_grant');
    const api = await get(`${g.url}/v26/customers:listAccessibleCustomers`, {
      authorization: `Bearer ${first.body['access_token']}`,
    });
    expect(api.status).toBe(401);
    const refreshed = await post(g.endpoints.token, {
      grant_type: 'refresh_token',
      refresh_token: String(first.body['refresh_token']),
      ...creds(),
    });
    expect(refreshed.body).toEqual({
      error: 'invalid_grant',
      error_description: 'Token has been expired or revoked.',
    });
  });

  it('accepts client_secret_post and client_secret_basic, not a wrong or missing secret', async () => {
    const { refreshToken } = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE });
    const form = { grant_type: 'refresh_token', refresh_token: refreshToken };
    expect((await post(g.endpoints.token, { ...form, ...creds() })).status).toBe(200);
    const viaBasic = await post(g.endpoints.token, form, {
      authorization: basic(client().clientId, client().clientSecret!),
    });
    expect(viaBasic.status).toBe(200);
    const wrong = await post(g.endpoints.token, {
      ...form,
      client_id: client().clientId,
      client_secret: 'nope',
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body['error']).toBe('invalid_client');
    const missing = await post(g.endpoints.token, { ...form, client_id: client().clientId });
    expect(missing.body).toEqual({
      error: 'invalid_request',
      error_description: 'client_secret is missing.',
    });
  });

  it('lists accessible customers, searches customer and customer_client, refuses pageSize', async () => {
    const { accessToken } = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE });
    const auth = { authorization: `Bearer ${accessToken}` };
    const list = await get(`${g.url}/v26/customers:listAccessibleCustomers`, auth);
    expect(list.body).toEqual({ resourceNames: ['customers/1112223334', 'customers/1234567890'] });
    const search = (cid: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${g.url}/v26/customers/${cid}/googleAds:search`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Body }));
    const customer = await search('1234567890', {
      query:
        'SELECT customer.id, customer.descriptive_name, customer.currency_code, customer.manager FROM customer',
    });
    expect(customer.body).toEqual({
      results: [
        {
          customer: {
            resourceName: 'customers/1234567890',
            id: '1234567890',
            descriptiveName: 'Acme US',
            currencyCode: 'USD',
            manager: false,
          },
        },
      ],
      fieldMask: 'customer.id,customer.descriptiveName,customer.currencyCode,customer.manager',
    });
    const hierarchy = await search(
      '1112223334',
      {
        query:
          'SELECT customer_client.client_customer, customer_client.level, customer_client.manager, customer_client.descriptive_name, customer_client.currency_code, customer_client.id FROM customer_client WHERE customer_client.level <= 1',
      },
      { 'login-customer-id': '1112223334' },
    );
    const rows = hierarchy.body['results'] as Array<{ customerClient: Body }>;
    expect(rows.map((r) => [r.customerClient['id'], r.customerClient['level']])).toEqual([
      ['1112223334', '0'],
      ['1234567890', '1'],
      ['2345678901', '1'],
    ]);
    expect(rows[2]?.customerClient).toMatchObject({
      clientCustomer: 'customers/2345678901',
      currencyCode: 'JPY',
    });
    const query = 'SELECT customer.id FROM customer';
    expect((await search('2345678901', { query })).status).toBe(403);
    expect((await search('2345678901', { query }, { 'login-customer-id': '1112223334' })).status).toBe(200);
    const paged = await search('1234567890', { query, pageSize: 10 });
    expect(paged.status).toBe(400);
    expect(JSON.stringify(paged.body)).toContain('PAGE_SIZE_NOT_SUPPORTED');
  });

  it('revokes a refresh token and its access tokens', async () => {
    const grant = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE });
    expect((await post(`${g.url}/revoke`, { token: grant.refreshToken })).status).toBe(200);
    const api = await get(`${g.url}/v26/customers:listAccessibleCustomers`, {
      authorization: `Bearer ${grant.accessToken}`,
    });
    expect(api.status).toBe(401);
  });

  it('fails the next token call with Retry-After, then recovers', async () => {
    const { refreshToken } = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE });
    g.faults.failNext(1, {
      status: 429,
      headers: { 'retry-after': '2' },
      body: { error: 'rate_limit_exceeded' },
    });
    const form = { grant_type: 'refresh_token', refresh_token: refreshToken, ...creds() };
    const before = g.refreshCount;
    const limited = await post(g.endpoints.token, form);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('2');
    expect(g.refreshCount).toBe(before);
    expect((await post(g.endpoints.token, form)).status).toBe(200);
    expect(g.refreshCount).toBe(before + 1);
  });

  it('lets tests add routes', async () => {
    g.route('POST', '/{version}/customers/{cid}/campaignBudgets:mutate', ({ params }) => ({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ results: [{ resourceName: `customers/${params['cid']}/campaignBudgets/1` }] }),
    }));
    const res = await fetch(`${g.url}/v26/customers/1234567890/campaignBudgets:mutate`, { method: 'POST' });
    expect(await res.json()).toEqual({
      results: [{ resourceName: 'customers/1234567890/campaignBudgets/1' }],
    });
  });
});

describe('Microsoft double', () => {
  let m: MicrosoftDouble;
  const creds = () => ({
    client_id: m.defaultClient!.clientId,
    client_secret: m.defaultClient!.clientSecret!,
  });

  beforeAll(async () => {
    m = await startMicrosoftDouble();
    m.registerClient({ clientId: 'public-app', redirectUris: ['http://localhost'], public: true });
  });
  afterAll(() => m.close());

  it('exchanges a PKCE code (port ignored on localhost) and refuses a wrong verifier', async () => {
    const redirectUri = 'http://localhost:40123/callback';
    m.registerClient({ clientId: 'cli', redirectUris: ['http://localhost:8080/callback'], public: true });
    const query = new URLSearchParams({
      client_id: 'cli',
      redirect_uri: redirectUri,
      response_type: 'code',
      state: 'xyz',
      scope: MS_SCOPE,
      code_challenge: pkceS256(VERIFIER),
      code_challenge_method: 'S256',
    });
    const res = await fetch(`${m.endpoints.authorize}?${query}`, { redirect: 'manual' });
    const code = new URL(res.headers.get('location')!).searchParams.get('code')!;
    const form = { client_id: 'cli', grant_type: 'authorization_code', code, redirect_uri: redirectUri };
    const wrong = await post(m.endpoints.token, { ...form, code_verifier: 'x'.repeat(43) });
    expect(wrong.status).toBe(400);
    expect(wrong.body['error']).toBe('invalid_grant');
    const ok = await post(m.endpoints.token, { ...form, code_verifier: VERIFIER });
    expect(ok.status).toBe(200);
    expect(ok.body['token_type']).toBe('Bearer');
    expect(ok.body['expires_in']).toBeGreaterThanOrEqual(3600);
    expect(ok.body['expires_in']).toBeLessThanOrEqual(5400);
    expect(ok.body['ext_expires_in']).toBe(ok.body['expires_in']);
    expect(ok.body['refresh_token']).toMatch(/^M\.C5_BAY\./);
  });

  it('refuses a secret from a public client and a confidential client without one', async () => {
    const publicGrant = m.issueGrant({ clientId: 'public-app', scope: MS_SCOPE });
    const sent = await post(m.endpoints.token, {
      client_id: 'public-app',
      client_secret: 'whatever',
      grant_type: 'refresh_token',
      refresh_token: publicGrant.refreshToken,
      scope: MS_SCOPE,
    });
    expect(sent.status).toBe(400);
    expect(sent.body['error']).toBe('invalid_request');
    expect(sent.body['error_description']).toMatch(
      /^AADSTS700025: Public clients can't send a client secret\./,
    );
    const { refreshToken } = m.issueGrant({ scope: MS_SCOPE });
    const noSecret = await post(m.endpoints.token, {
      client_id: m.defaultClient!.clientId,
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      scope: MS_SCOPE,
    });
    expect(noSecret.status).toBe(401);
    expect(noSecret.body['error']).toBe('invalid_client');
  });

  it('requires scope on refresh and rotates the refresh token (old one still works)', async () => {
    const { refreshToken } = m.issueGrant({ scope: MS_SCOPE });
    const noScope = await post(m.endpoints.token, {
      ...creds(),
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
    });
    expect(noScope.status).toBe(400);
    expect(noScope.body['error']).toBe('invalid_request');
    expect(noScope.body['error_description']).toMatch(/^AADSTS90014: The required field 'scope' is missing/);
    const form = { ...creds(), grant_type: 'refresh_token', scope: MS_SCOPE };
    const first = await post(m.endpoints.token, { ...form, refresh_token: refreshToken });
    expect(first.status).toBe(200);
    expect(first.body['refresh_token']).toBeTypeOf('string');
    expect(first.body['refresh_token']).not.toBe(refreshToken);
    const reused = await post(m.endpoints.token, { ...form, refresh_token: refreshToken });
    expect(reused.status).toBe(200);
  });

  it('with strictRotation, a reused refresh token revokes the whole grant', async () => {
    m.settings.strictRotation = true;
    try {
      const { refreshToken } = m.issueGrant({ scope: MS_SCOPE });
      const form = { ...creds(), grant_type: 'refresh_token', scope: MS_SCOPE };
      const first = await post(m.endpoints.token, { ...form, refresh_token: refreshToken });
      const rotated = String(first.body['refresh_token']);
      const reused = await post(m.endpoints.token, { ...form, refresh_token: refreshToken });
      expect(reused.status).toBe(400);
      expect(reused.body['error']).toBe('invalid_grant');
      expect((await post(m.endpoints.token, { ...form, refresh_token: rotated })).status).toBe(400);
    } finally {
      m.settings.strictRotation = false;
    }
  });

  it('drops the answer after rotating (dropAfterRotate)', async () => {
    const { refreshToken, grantId } = m.issueGrant({ scope: MS_SCOPE });
    m.faults.dropAfterRotate(1);
    const before = m.refreshCount;
    await expect(
      post(m.endpoints.token, {
        ...creds(),
        grant_type: 'refresh_token',
        scope: MS_SCOPE,
        refresh_token: refreshToken,
      }),
    ).rejects.toThrow();
    expect(m.refreshCount).toBe(before + 1);
    expect(m.grants.get(grantId)?.refreshTokens).toHaveLength(2);
    expect(m.refreshTokens.get(refreshToken)?.supersededAt).not.toBeNull();
  });

  it('has no revocation endpoint', async () => {
    expect((await post(`${m.url}/common/oauth2/v2.0/revoke`, { token: 'x' })).status).toBe(404);
  });

  it('serves GetUser and SearchAccounts, and needs DeveloperToken', async () => {
    const { accessToken } = m.issueGrant({ scope: MS_SCOPE });
    const call = (path: string, body: unknown, headers: Record<string, string>) =>
      fetch(`${m.url}/CustomerManagement/v13/${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Body }));
    const missing = await call('User/Query', { UserId: null }, {});
    expect(missing.status).toBe(400);
    expect(missing.body['Errors']).toMatchObject([{ Code: 105, ErrorCode: 'InvalidCredentials' }]);
    const user = await call('User/Query', { UserId: null }, { DeveloperToken: 'dev' });
    expect(user.body['User']).toMatchObject({ Id: '123', CustomerId: '456', UserName: 'ops@example.com' });
    const accounts = await call(
      'Accounts/Search',
      {
        Predicates: [{ Field: 'UserId', Operator: 'Equals', Value: '123' }],
        PageInfo: { Index: 0, Size: 100 },
      },
      { DeveloperToken: 'dev' },
    );
    expect(accounts.body['Accounts']).toHaveLength(2);
    expect(accounts.body['Accounts']).toMatchObject([
      {
        Id: '987',
        Number: 'F12ABCDE',
        CurrencyCode: 'USD',
        ParentCustomerId: '456',
        AccountLifeCycleStatus: 'Active',
      },
      { Id: '988' },
    ]);
  });
});

describe('LinkedIn double', () => {
  let l: LinkedInDouble;
  const creds = () => ({
    client_id: l.defaultClient!.clientId,
    client_secret: l.defaultClient!.clientSecret!,
  });

  beforeAll(async () => {
    l = await startLinkedInDouble();
  });
  afterAll(() => l.close());

  it('ignores PKCE, answers without token_type, and keeps the refresh expiry fixed', async () => {
    const code = await codeFor(l, { scope: 'r_ads rw_ads', code_challenge: pkceS256(VERIFIER) });
    const exchanged = await post(l.endpoints.token, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: l.defaultClient!.redirectUris[0]!,
      ...creds(),
    });
    expect(exchanged.status).toBe(200);
    expect(exchanged.body).not.toHaveProperty('token_type');
    expect(exchanged.body).toMatchObject({
      expires_in: 5184000,
      refresh_token_expires_in: 31536000,
      scope: 'r_ads,rw_ads',
    });
    const refreshToken = String(exchanged.body['refresh_token']);
    l.advanceClock(10 * 86400 * 1000);
    const refreshed = await post(l.endpoints.token, {
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      ...creds(),
    });
    expect(refreshed.body['refresh_token']).toBe(refreshToken);
    expect(refreshed.body['refresh_token_expires_in']).toBe(31536000 - 10 * 86400);
    expect(refreshed.body['expires_in']).toBe(5184000);
  });

  it('refuses Basic client auth and answers invalid_request for an expired refresh token', async () => {
    const { refreshToken } = l.issueGrant({ scope: 'r_ads' });
    const viaBasic = await post(
      l.endpoints.token,
      { grant_type: 'refresh_token', refresh_token: refreshToken },
      { authorization: basic(l.defaultClient!.clientId, l.defaultClient!.clientSecret!) },
    );
    expect(viaBasic.status).toBe(401);
    expect(viaBasic.body['error']).toBe('invalid_client');
    l.setRefreshExpiry(refreshToken, 5);
    const nearEnd = await post(l.endpoints.token, {
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      ...creds(),
    });
    expect(nearEnd.body['refresh_token_expires_in']).toBe(5);
    l.advanceClock(6000);
    const expired = await post(l.endpoints.token, {
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      ...creds(),
    });
    expect(expired.status).toBe(400);
    expect(expired.body).toEqual({
      error: 'invalid_request',
      error_description: 'The provided authorization grant or refresh token is invalid, expired or revoked',
    });
  });

  it('needs LinkedIn-Version and serves ad account users and accounts', async () => {
    const { accessToken } = l.issueGrant({ scope: 'r_ads,rw_ads' });
    const auth = { authorization: `Bearer ${accessToken}`, 'x-restli-protocol-version': '2.0.0' };
    const url = `${l.url}/rest/adAccountUsers?q=authenticatedUser`;
    const missing = await get(url, auth);
    expect(missing.status).toBe(400);
    expect(missing.body).toMatchObject({ status: 400, code: 'VERSION_MISSING' });
    expect((await get(url, { ...auth, 'linkedin-version': '202401' })).status).toBe(426);
    const users = await get(url, { ...auth, 'linkedin-version': '202601' });
    expect(users.status).toBe(200);
    expect(users.body?.['elements']).toEqual([
      { account: 'urn:li:sponsoredAccount:5101', role: 'ACCOUNT_MANAGER', user: 'urn:li:person:abc' },
      { account: 'urn:li:sponsoredAccount:5102', role: 'VIEWER', user: 'urn:li:person:abc' },
    ]);
    const account = await get(`${l.url}/rest/adAccounts/5101`, { ...auth, 'linkedin-version': '202601' });
    expect(account.body).toEqual({
      id: 5101,
      name: 'Acme LinkedIn',
      currency: 'USD',
      status: 'ACTIVE',
      type: 'BUSINESS',
      reference: 'urn:li:organization:1',
      test: false,
    });
  });
});

describe('Reddit double', () => {
  let r: RedditDouble;
  const auth = () => basic(r.defaultClient!.clientId, r.defaultClient!.clientSecret!);

  beforeAll(async () => {
    r = await startRedditDouble();
  });
  afterAll(() => r.close());

  it('answers 429 to a missing or generic User-Agent on every route', async () => {
    const { accessToken } = r.issueGrant({ scope: 'adsread' });
    const bearer = { authorization: `Bearer ${accessToken}` };
    expect((await get(`${r.url}/api/v3/me`, bearer)).status).toBe(429); // fetch sends "node"
    const curl = await get(`${r.url}/api/v3/me`, { ...bearer, 'user-agent': 'curl/8.5.0' });
    expect(curl.status).toBe(429);
    expect(curl.body).toEqual({ message: 'Too Many Requests', error: 429 });
    expect(
      (await post(r.endpoints.token, { grant_type: 'refresh_token' }, { 'user-agent': '' })).status,
    ).toBe(429);
    const ok = await get(`${r.url}/api/v3/me`, { ...bearer, ...UA });
    expect(ok.body).toEqual({ data: { id: 't2_abc', username: 'adops' } });
  });

  it('needs Basic auth, and gives a refresh token only for duration=permanent', async () => {
    const redirectUri = r.defaultClient!.redirectUris[0]!;
    const temporary = await codeFor(r, { scope: 'adsread read', duration: 'temporary' }, UA);
    const inBody = await post(
      r.endpoints.token,
      {
        grant_type: 'authorization_code',
        code: temporary,
        redirect_uri: redirectUri,
        ...{ client_id: r.defaultClient!.clientId, client_secret: r.defaultClient!.clientSecret! },
      },
      UA,
    );
    expect(inBody.status).toBe(401);
    expect(inBody.body).toEqual({ message: 'Unauthorized', error: 401 });
    const noRefresh = await post(
      r.endpoints.token,
      { grant_type: 'authorization_code', code: temporary, redirect_uri: redirectUri },
      { ...UA, authorization: auth() },
    );
    expect(noRefresh.status).toBe(200);
    expect(noRefresh.body).not.toHaveProperty('refresh_token');
    const permanent = await codeFor(r, { scope: 'adsread,read', duration: 'permanent' }, UA);
    const withRefresh = await post(
      r.endpoints.token,
      { grant_type: 'authorization_code', code: permanent, redirect_uri: redirectUri },
      { ...UA, authorization: auth() },
    );
    expect(withRefresh.body).toMatchObject({ token_type: 'bearer', expires_in: 3600, scope: 'adsread read' });
    const refreshed = await post(
      r.endpoints.token,
      { grant_type: 'refresh_token', refresh_token: String(withRefresh.body['refresh_token']) },
      { ...UA, authorization: auth() },
    );
    expect(refreshed.status).toBe(200);
    expect(refreshed.body).not.toHaveProperty('refresh_token');
    expect(refreshed.body['token_type']).toBe('bearer');
    // A refused code, an unknown grant type, a missing parameter: HTTP 200 with an error body.
    const refused = async (form: Record<string, string>) => {
      const res = await post(r.endpoints.token, form, { ...UA, authorization: auth() });
      return [res.status, res.body];
    };
    expect(
      await refused({ grant_type: 'authorization_code', code: permanent, redirect_uri: redirectUri }),
    ).toEqual([200, { error: 'invalid_grant' }]);
    expect(await refused({ grant_type: 'password' })).toEqual([200, { error: 'unsupported_grant_type' }]);
    expect(await refused({ grant_type: 'authorization_code', redirect_uri: redirectUri })).toEqual([
      200,
      { error: 'invalid_request' },
    ]);
  });

  it('pages ad accounts with absolute next_url values', async () => {
    const { accessToken } = r.issueGrant({ scope: 'adsread' });
    const headers = { authorization: `Bearer ${accessToken}`, ...UA };
    const businesses = await get(`${r.url}/api/v3/me/businesses`, headers);
    expect(businesses.body).toEqual({
      data: [{ id: 'biz_1', name: 'Acme' }],
      pagination: { next_url: null },
    });
    const seen: unknown[] = [];
    let next: string | null = `${r.url}/api/v3/businesses/biz_1/ad_accounts`;
    while (next) {
      expect(next.startsWith(`${r.url}/`)).toBe(true);
      const page = await get(next, headers);
      expect(page.status).toBe(200);
      const body = page.body as { data: unknown[]; pagination: { next_url: string | null } };
      seen.push(...body.data);
      next = body.pagination.next_url;
    }
    expect(seen).toMatchObject([{ id: 'a2_xyz', name: 'Acme Reddit', currency: 'USD' }, { id: 'a2_uvw' }]);
  });

  it('revokes a refresh token with its access tokens (204)', async () => {
    const grant = r.issueGrant({ scope: 'adsread' });
    const res = await post(
      `${r.url}/api/v1/revoke_token`,
      { token: grant.refreshToken, token_type_hint: 'refresh_token' },
      { ...UA, authorization: auth() },
    );
    expect(res.status).toBe(204);
    expect(
      (await get(`${r.url}/api/v3/me`, { authorization: `Bearer ${grant.accessToken}`, ...UA })).status,
    ).toBe(401);
  });
});

describe('consent modes and faults', () => {
  it('serves a consent page whose Allow and Deny buttons redirect', async () => {
    const g = await startGoogleDouble({ consent: 'page' });
    try {
      const query = new URLSearchParams({
        client_id: g.defaultClient!.clientId,
        redirect_uri: 'http://127.0.0.1:9/',
        response_type: 'code',
        state: 's1',
        scope: GOOGLE_ADWORDS_SCOPE,
      });
      const decide = async (decision: string) => {
        const page = await get(`${g.endpoints.authorize}?${query}`);
        expect(page.status).toBe(200);
        expect(page.text).toContain('id="allow"');
        expect(page.text).toContain('id="deny"');
        const action = /action="([^"]+)"/.exec(page.text)![1]!;
        const request = /name="request" value="([^"]+)"/.exec(page.text)![1]!;
        const res = await post(g.url + action, { request, decision });
        expect(res.status).toBe(302);
        return new URL(res.headers.get('location')!);
      };
      const allowed = await decide('allow');
      expect(allowed.searchParams.get('code')).toBeTruthy();
      expect(allowed.searchParams.get('state')).toBe('s1');
      const denied = await decide('deny');
      expect(denied.searchParams.get('error')).toBe('access_denied');
      expect(denied.searchParams.get('state')).toBe('s1');
      g.consent = 'deny';
      const auto = await authorize(g, { scope: GOOGLE_ADWORDS_SCOPE, redirect_uri: 'http://127.0.0.1:9/' });
      expect(auto.searchParams.get('error')).toBe('access_denied');
    } finally {
      await g.close();
    }
  });

  it('hangs a request until close, and delays with latencyMs', async () => {
    const g = await startGoogleDouble();
    const { refreshToken } = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE });
    const form = {
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      client_id: g.defaultClient!.clientId,
      client_secret: g.defaultClient!.clientSecret!,
    };
    g.faults.latencyMs = 60;
    const started = Date.now();
    expect((await post(g.endpoints.token, form)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(55);
    g.faults.latencyMs = 0;
    g.faults.hangNext(1);
    const hung = post(g.endpoints.token, form);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(g.refreshAttempts).toBe(2);
    expect(g.refreshCount).toBe(1);
    await g.close();
    await expect(hung).rejects.toThrow();
  });

  it('invalidateGrants answers each platform’s dead-grant error', async () => {
    const all = await startAllDoubles();
    try {
      const { google, microsoft, linkedin, reddit } = all;
      const g = google.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE }).refreshToken;
      const m = microsoft.issueGrant({ scope: MS_SCOPE }).refreshToken;
      const l = linkedin.issueGrant({ scope: 'r_ads' }).refreshToken;
      const r = reddit.issueGrant({ scope: 'adsread' }).refreshToken;
      for (const d of [google, microsoft, linkedin]) d.faults.invalidateGrants();
      reddit.invalidateGrants();
      const gc = google.defaultClient!;
      const mc = microsoft.defaultClient!;
      const lc = linkedin.defaultClient!;
      const rc = reddit.defaultClient!;
      const [gr, mr, lr, rr] = await Promise.all([
        post(google.endpoints.token, {
          grant_type: 'refresh_token',
          refresh_token: g,
          client_id: gc.clientId,
          client_secret: gc.clientSecret!,
        }),
        post(microsoft.endpoints.token, {
          grant_type: 'refresh_token',
          refresh_token: m,
          scope: MS_SCOPE,
          client_id: mc.clientId,
          client_secret: mc.clientSecret!,
        }),
        post(linkedin.endpoints.token, {
          grant_type: 'refresh_token',
          refresh_token: l,
          client_id: lc.clientId,
          client_secret: lc.clientSecret!,
        }),
        post(
          reddit.endpoints.token,
          { grant_type: 'refresh_token', refresh_token: r },
          { ...UA, authorization: basic(rc.clientId, rc.clientSecret!) },
        ),
      ]);
      expect([gr.status, mr.status, lr.status, rr.status]).toEqual([400, 400, 400, 400]);
      expect(gr.body).toEqual({
        error: 'invalid_grant',
        error_description: 'Token has been expired or revoked.',
      });
      expect(mr.body['error']).toBe('invalid_grant');
      expect(mr.body['error_description']).toMatch(
        /^AADSTS70000: The user could not be authenticated or the grant is expired/,
      );
      expect(lr.body).toEqual({
        error: 'invalid_request',
        error_description: 'The provided authorization grant or refresh token is invalid, expired or revoked',
      });
      expect(rr.body).toEqual({ error: 400 });
    } finally {
      await all.close();
    }
  });
});

describe('Google double: a refresh token unused for six months dies (providers.md §1)', () => {
  let g: GoogleDouble;
  beforeAll(async () => {
    g = await startGoogleDouble();
  });
  afterAll(() => g.close());

  it('refreshes after 179 idle days (and each use starts the count again); refuses invalid_grant after 180', async () => {
    const client = g.defaultClient!;
    const refresh = (token: string) =>
      post(g.endpoints.token, {
        grant_type: 'refresh_token',
        refresh_token: token,
        client_id: client.clientId,
        client_secret: client.clientSecret!,
      });
    const { refreshToken } = g.issueGrant({ clientId: client.clientId, scope: GOOGLE_ADWORDS_SCOPE });
    g.advanceClock(179 * 86_400_000);
    expect((await refresh(refreshToken)).status).toBe(200);
    g.advanceClock(179 * 86_400_000);
    expect((await refresh(refreshToken)).status).toBe(200);
    g.advanceClock(180 * 86_400_000);
    const dead = await refresh(refreshToken);
    expect(dead.status).toBe(400);
    expect(dead.body.error).toBe('invalid_grant');
  });
});
