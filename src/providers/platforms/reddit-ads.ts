import type { Secret } from '../../crypto/secret.js';
import { apiUrl, buildAuthorizationUrl } from '../authorize.js';
import { PLATFORMS } from '../catalog.js';
import { ProviderError } from '../errors.js';
import type { ErrorReader } from '../http.js';
import { apiRequest } from '../http.js';
import { exchangeCode, type OAuthProfile, refreshGrant, revokeToken } from '../oauth.js';
import { PageGuard } from '../paging.js';
import type { AdAccount, CallOptions, Provider, ProviderApp } from '../types.js';

const info = PLATFORMS.reddit_ads;
const DEFAULT_API = 'https://ads-api.reddit.com';

/** Reddit throttles generic user agents hard; every call carries the app's descriptive one. */
export function redditUserAgent(app: Pick<ProviderApp, 'userAgent' | 'clientId'>): string {
  return app.userAgent ?? `credvault:${app.clientId}:v1`;
}

const profile: OAuthProfile = {
  clientAuth: 'basic_raw',
  headers: (app) => ({ 'user-agent': redditUserAgent(app) }),
  // A refused code comes back as HTTP 200 with `{"error":"invalid_grant"}` (oauth.ts reads it), but
  // an unknown or revoked refresh token as HTTP 400 with `{"error": 400}`: prawcore's recorded
  // answer (tests/integration/cassettes/TestAuthorizer.test_refresh__with_invalid_token.json), and
  // `invalid_request` in Reddit's published server code (r2/controllers/oauth2.py). credvault always
  // sends the refresh token, so either means the token is dead. Only those shapes: a proxy's HTML 400
  // is judged by its status (a person looks; the grant is not given up).
  refusedGrant: (status, body) => status === 400 && typeof body.error === 'number',
  deadGrant: (error) => error === 'invalid_request',
};

/**
 * Reddit's error bodies: `{"message","error":<status>}` (reddit.com style: 401, 403, 404, 429) and the
 * Ads API's `{"error":{"code":<status>,"message","fields":[{"field","message"}]}}` (field validation;
 * the message alone can be a bare "Bad Request", so the fields' messages are kept). The numeric code
 * only repeats the status. A throttled client is told when its window ends by `x-ratelimit-reset`
 * (seconds), as reddit.com documents it; that ads-api.reddit.com sends it too is [unconfirmed].
 */
export const readRedditError: ErrorReader = (status, body, headers) => {
  const error = body as { message?: unknown; error?: unknown } | null;
  const nested =
    error?.error && typeof error.error === 'object'
      ? (error.error as { code?: unknown; message?: unknown; fields?: unknown })
      : null;
  const text = (value: unknown) => (typeof value === 'string' && value.trim() ? value.trim() : null);
  let message = text(nested?.message) ?? text(error?.message);
  const fields = Array.isArray(nested?.fields)
    ? (nested.fields as Array<{ field?: unknown; message?: unknown }>)
        .map((f) => {
          const what = text(f?.message);
          if (!what || what === message) return null;
          const field = text(f?.field);
          return field ? `${field}: ${what}` : what;
        })
        .filter((f): f is string => f !== null)
    : [];
  if (fields.length > 0) message = `${message ? `${message}: ` : ''}${fields.join('; ')}`;
  const code = text(nested?.code);
  const reset = Number(headers.get('x-ratelimit-reset') ?? Number.NaN);
  return {
    code,
    message,
    retryAfter: status === 429 && Number.isFinite(reset) && reset >= 0 ? Math.ceil(reset) : null,
  };
};

export function redditHeaders(app: ProviderApp, accessToken: Secret): Record<string, string> {
  return { authorization: `Bearer ${accessToken.reveal()}`, 'user-agent': redditUserAgent(app) };
}

export function redditApiBase(app: ProviderApp): string {
  return app.endpoints.apiBase ?? DEFAULT_API;
}

/**
 * Follows Reddit's absolute `pagination.next_url`, but only on the API's own origin: a next_url that
 * pointed elsewhere would receive the access token.
 */
export async function redditPages<T>(
  app: ProviderApp,
  accessToken: Secret,
  firstUrl: string,
  options: CallOptions,
  what: string,
): Promise<T[]> {
  const origin = new URL(redditApiBase(app)).origin;
  const items: T[] = [];
  const guard = new PageGuard('Reddit', what);
  let url: string | null = firstUrl;
  while (url) {
    if (new URL(url).origin !== origin) {
      throw new ProviderError('invalid_response', `${what}: Reddit's next page points outside ${origin}`);
    }
    const { body }: { body: { data?: T[]; pagination?: { next_url?: string | null } } | null } =
      await apiRequest({
        method: 'GET',
        url,
        headers: redditHeaders(app, accessToken),
        signal: options.signal,
        secrets: [accessToken.reveal()],
        what,
        readError: readRedditError,
      });
    items.push(...(body?.data ?? []));
    url = body?.pagination?.next_url || null;
    if (url) guard.next(url);
  }
  return items;
}

export async function discoverAccounts(
  app: ProviderApp,
  accessToken: Secret,
  options: CallOptions,
): Promise<AdAccount[]> {
  const base = redditApiBase(app);
  const businesses = await redditPages<{ id: string; name?: string }>(
    app,
    accessToken,
    apiUrl(base, '/api/v3/me/businesses'),
    options,
    'listing Reddit businesses',
  );
  const accounts: AdAccount[] = [];
  for (const business of businesses) {
    const adAccounts = await redditPages<{ id: string; name?: string; currency?: string }>(
      app,
      accessToken,
      apiUrl(base, `/api/v3/businesses/${encodeURIComponent(business.id)}/ad_accounts`),
      options,
      `listing the ad accounts of Reddit business ${business.id}`,
    );
    for (const account of adAccounts) {
      accounts.push({
        id: account.id,
        name: account.name ?? null,
        currency: account.currency ?? null,
        details: { business_id: business.id, ...(business.name ? { business_name: business.name } : {}) },
      });
    }
  }
  return accounts;
}

export const redditAds: Provider = {
  id: 'reddit_ads',
  info,
  capabilities: info.capabilities,
  consentPage: 'https://www.reddit.com/prefs/apps',
  // duration=permanent is what gets a refresh token; temporary grants die after an hour.
  authorizationUrl: (app, request) => buildAuthorizationUrl(app, request, { duration: 'permanent' }),
  exchangeCode: (app, exchange, options) => exchangeCode(profile, app, exchange, options),
  refresh: (app, refreshToken, options) => refreshGrant(profile, app, refreshToken, options),
  async revoke(app, tokens, options) {
    // Revoking the refresh token also kills its access tokens.
    const token = tokens.refreshToken ?? tokens.accessToken;
    if (token)
      await revokeToken(profile, app, token, tokens.refreshToken ? 'refresh_token' : 'access_token', options);
    return 'revoked';
  },
  discoverAccounts,
};
