import type { Secret } from '../../crypto/secret.js';
import { apiUrl, buildAuthorizationUrl } from '../authorize.js';
import { PLATFORMS } from '../catalog.js';
import type { ErrorReader } from '../http.js';
import { apiRequest } from '../http.js';
import { exchangeCode, type OAuthProfile, refreshGrant, revokeToken } from '../oauth.js';
import { PageGuard } from '../paging.js';
import type { AdAccount, CallOptions, Provider, ProviderApp } from '../types.js';

const info = PLATFORMS.linkedin_ads;
const DEFAULT_API = 'https://api.linkedin.com';

const profile: OAuthProfile = {
  clientAuth: 'client_secret_post',
  // 60 days (providers.md §3): what an answer without expires_in is taken to give.
  accessTokenSeconds: 60 * 86_400,
  // A dead or expired refresh token comes back as invalid_request, not invalid_grant; so does a
  // request without the app's client_id or client_secret ('A required parameter "client_id" is
  // missing'), which is the app's configuration, not the grant.
  deadGrant: (error, description) =>
    error === 'invalid_request' &&
    !/required parameter "?(client_id|client_secret|grant_type)\b/i.test(description),
  // LinkedIn's token answers have no token_type.
  missingTokenType: 'Bearer',
};

interface LinkedInErrorBody {
  code?: string;
  serviceErrorCode?: number;
  message?: string;
  /** The newer 400 envelope (errorDetailType com.linkedin.common.error.BadRequest). */
  errorDetails?: {
    inputErrors?: Array<{
      code?: string;
      description?: string;
      input?: { inputPath?: { fieldPath?: string } };
    }>;
  };
}

/** Seconds until LinkedIn's daily rate limits reset (midnight UTC). */
function secondsToMidnightUtc(now = Date.now()): number {
  const midnight = new Date(now);
  midnight.setUTCHours(24, 0, 0, 0);
  return Math.max(60, Math.ceil((midnight.getTime() - now) / 1000));
}

function inWords(seconds: number): string {
  const minutes = Math.ceil(seconds / 60);
  const hours = Math.floor(minutes / 60);
  return hours > 0 ? `${hours} h ${minutes % 60} min` : `${minutes} min`;
}

/**
 * LinkedIn errors: `{status, code, message}`, `{serviceErrorCode, message}`, or the newer 400 envelope
 * whose `errorDetails.inputErrors` say which field and why. 426: the version is sunset. 429: the app's
 * or the member's daily limit, which resets at midnight UTC (LinkedIn sends no Retry-After).
 */
export const readLinkedInError: ErrorReader = (status, body) => {
  const error = body as LinkedInErrorBody | null;
  const input = error?.errorDetails?.inputErrors?.[0];
  let message = error?.message ?? null;
  if (input?.description && input.description !== message) {
    const field = input.input?.inputPath?.fieldPath;
    message = `${message ? `${message} ` : ''}(${field ? `${field}: ` : ''}${input.description})`;
  }
  if (status === 426)
    message = `the LinkedIn-Version is no longer served (${message ?? 'upgrade required'}); set a current one with \`credvault apps update APP --api-version YYYYMM\``;
  const wait = status === 429 ? secondsToMidnightUtc() : null;
  if (wait !== null)
    message = `${(message ?? 'rate limit reached').replace(/[.\s]+$/, '')}. LinkedIn's API limits are daily and reset at midnight UTC (in ${inWords(wait)})`;
  return {
    code:
      error?.code ??
      input?.code ??
      (error?.serviceErrorCode !== undefined ? String(error.serviceErrorCode) : null),
    message,
    kind: status === 426 ? 'invalid_request' : null,
    // The wait as a number too (library callers read UnavailableError.retryAfter).
    retryAfter: wait,
  };
};

export function linkedInHeaders(app: ProviderApp, accessToken: Secret): Record<string, string> {
  return {
    authorization: `Bearer ${accessToken.reveal()}`,
    'linkedin-version': app.apiVersion,
    'x-restli-protocol-version': '2.0.0',
  };
}

export function linkedInApiBase(app: ProviderApp): string {
  return app.endpoints.apiBase ?? DEFAULT_API;
}

/** `urn:li:sponsoredAccount:123` and `123` are the same account. */
export function linkedInAccountId(value: string | number): string {
  return String(value).replace(/^urn:li:sponsoredAccount:/, '');
}

async function discoverAccounts(
  app: ProviderApp,
  accessToken: Secret,
  options: CallOptions,
): Promise<AdAccount[]> {
  const base = linkedInApiBase(app);
  const secrets = [accessToken.reveal()];
  const roles = new Map<string, string>();
  const count = 100;
  const guard = new PageGuard('LinkedIn', 'listing LinkedIn ad accounts (adAccountUsers)');
  for (let start = 0; ; start += count) {
    if (start) guard.next(String(start));
    const { body } = await apiRequest<{ elements?: Array<{ account?: string; role?: string }> }>({
      method: 'GET',
      url: apiUrl(base, '/rest/adAccountUsers', {
        q: 'authenticatedUser',
        start: String(start),
        count: String(count),
      }),
      headers: linkedInHeaders(app, accessToken),
      signal: options.signal,
      secrets,
      what: 'listing LinkedIn ad accounts (adAccountUsers)',
      readError: readLinkedInError,
    });
    const elements = body?.elements ?? [];
    for (const element of elements) {
      if (element.account) roles.set(linkedInAccountId(element.account), element.role ?? '');
    }
    if (elements.length < count) break;
  }
  const accounts: AdAccount[] = [];
  for (const [id, role] of roles) {
    const { body } = await apiRequest<{ name?: string; currency?: string; status?: string }>({
      method: 'GET',
      url: apiUrl(base, `/rest/adAccounts/${id}`),
      headers: linkedInHeaders(app, accessToken),
      signal: options.signal,
      secrets,
      what: `reading LinkedIn ad account ${id}`,
      readError: readLinkedInError,
    });
    accounts.push({
      id,
      name: body?.name ?? null,
      currency: body?.currency ?? null,
      details: { ...(role ? { role } : {}), ...(body?.status ? { account_status: body.status } : {}) },
    });
  }
  return accounts;
}

export const linkedInAds: Provider = {
  id: 'linkedin_ads',
  info,
  capabilities: info.capabilities,
  consentPage: 'https://www.linkedin.com/mypreferences/d/data-sharing-for-permitted-services',
  // The standard (web) flow has no PKCE; the native PKCE flow needs LinkedIn to enable it per app.
  authorizationUrl: (app, request) => buildAuthorizationUrl(app, request),
  exchangeCode: (app, exchange, options) => exchangeCode(profile, app, exchange, options),
  refresh: (app, refreshToken, options) => refreshGrant(profile, app, refreshToken, options),
  async revoke(app, tokens, options) {
    // [unconfirmed in LinkedIn's docs] /oauth/v2/revoke with token, client_id and client_secret, as
    // many integrations use it. Which tokens it accepts, and whether revoking the refresh token ends
    // the access tokens it made, is not documented: both are revoked, each on its own, the refresh
    // token first. Revoked only when the refresh token was taken (or there is none and the access
    // token was): an access token revoked alone leaves the grant able to mint new ones.
    const refusal = { refresh_token: null as unknown, access_token: null as unknown };
    for (const [token, hint] of [
      [tokens.refreshToken, 'refresh_token'],
      [tokens.accessToken, 'access_token'],
    ] as const) {
      if (!token) continue;
      try {
        await revokeToken(profile, app, token, hint, options);
      } catch (error) {
        refusal[hint] = error;
      }
    }
    if (refusal.refresh_token) throw refusal.refresh_token;
    if (!tokens.refreshToken && refusal.access_token) throw refusal.access_token;
    return 'revoked';
  },
  discoverAccounts,
};
