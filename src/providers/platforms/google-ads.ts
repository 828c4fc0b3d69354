import type { Secret } from '../../crypto/secret.js';
import { apiUrl, buildAuthorizationUrl } from '../authorize.js';
import { PLATFORMS } from '../catalog.js';
import { ProviderError } from '../errors.js';
import type { ErrorReader } from '../http.js';
import { apiRequest } from '../http.js';
import { exchangeCode, type OAuthProfile, refreshGrant, revokeToken } from '../oauth.js';
import { PageGuard } from '../paging.js';
import type { AdAccount, CallOptions, Provider, ProviderApp } from '../types.js';

const info = PLATFORMS.google_ads;
const DEFAULT_API = 'https://googleads.googleapis.com';

const profile: OAuthProfile = { clientAuth: 'client_secret_post' };

interface GoogleAdsFailure {
  error?: {
    code?: number;
    message?: string;
    status?: string;
    details?: Array<{
      errors?: Array<{
        errorCode?: Record<string, string>;
        message?: string;
        details?: { quotaErrorDetails?: { retryDelay?: string } };
      }>;
    }>;
  };
}

/** A protobuf Duration in JSON ("30s", "1.5s") as whole seconds, rounded up. */
function durationSeconds(value: string | undefined): number | null {
  const match = /^(\d+)(?:\.(\d+))?s$/.exec(value?.trim() ?? '');
  if (!match) return null;
  return Number(match[1]) + (match[2] && /[1-9]/.test(match[2]) ? 1 : 0);
}

/**
 * Google Ads errors: the GoogleAdsFailure's first error code (e.g. DEVELOPER_TOKEN_NOT_APPROVED) says
 * most. A quota error (429 RESOURCE_EXHAUSTED) carries its wait in the body, not in Retry-After:
 * `details.quotaErrorDetails.retryDelay` ("40591s"; the shape of a real v21 answer quoted in
 * PipedreamHQ/pipedream#21554 [not in providers.md]).
 */
export const readGoogleError: ErrorReader = (status, body) => {
  const error = (body as GoogleAdsFailure | null)?.error;
  const errors = error?.details?.flatMap((d) => d.errors ?? []) ?? [];
  const first = errors[0];
  const code = first?.errorCode ? Object.values(first.errorCode)[0] : (error?.status ?? null);
  const retryDelays = errors
    .map((e) => durationSeconds(e.details?.quotaErrorDetails?.retryDelay))
    .filter((s): s is number => s !== null);
  // A 401 about the developer token is the app's configuration, not the access token: no refresh helps.
  const developerToken =
    status === 401 && first?.errorCode?.['authenticationError']?.startsWith('DEVELOPER_TOKEN');
  return {
    code: code ?? null,
    message: first?.message ?? error?.message ?? null,
    kind:
      status === 429 || code === 'RESOURCE_EXHAUSTED' || code === 'RESOURCE_TEMPORARILY_EXHAUSTED'
        ? 'rate_limited'
        : developerToken
          ? 'client'
          : null,
    retryAfter: retryDelays.length > 0 ? Math.max(...retryDelays) : null,
  };
};

/** Headers every Google Ads API call carries: the developer token only when the app has one (optional since 2026-09). */
export function googleHeaders(
  app: ProviderApp,
  accessToken: Secret,
  loginCustomerId: string | null,
): Record<string, string> {
  return {
    authorization: `Bearer ${accessToken.reveal()}`,
    ...(app.developerToken ? { 'developer-token': app.developerToken.reveal() } : {}),
    // An empty or unresolved login-customer-id is an error at Google; send it only when set.
    ...(loginCustomerId ? { 'login-customer-id': loginCustomerId } : {}),
  };
}

export function googleApiBase(app: ProviderApp): string {
  return app.endpoints.apiBase ?? DEFAULT_API;
}

interface SearchRow {
  customer?: {
    id?: string;
    descriptiveName?: string;
    currencyCode?: string;
    manager?: boolean;
    status?: string;
  };
  customerClient?: {
    id?: string;
    clientCustomer?: string;
    descriptiveName?: string;
    currencyCode?: string;
    manager?: boolean;
    level?: string;
    /** ENABLED, or CANCELED, SUSPENDED, CLOSED (CustomerStatusEnum). */
    status?: string;
  };
}

/** googleAds:search, following nextPageToken (never sending pageSize: Google refuses it). */
export async function googleSearch<R = SearchRow>(
  app: ProviderApp,
  accessToken: Secret,
  customerId: string,
  query: string,
  loginCustomerId: string | null,
  options: CallOptions,
  what: string,
): Promise<R[]> {
  const rows: R[] = [];
  const guard = new PageGuard('Google Ads', what);
  let pageToken: string | undefined;
  do {
    const { body } = await apiRequest<{ results?: R[]; nextPageToken?: string }>({
      method: 'POST',
      url: apiUrl(googleApiBase(app), `/${app.apiVersion}/customers/${customerId}/googleAds:search`),
      headers: googleHeaders(app, accessToken, loginCustomerId),
      json: pageToken ? { query, pageToken } : { query },
      signal: options.signal,
      secrets: [accessToken.reveal(), app.developerToken?.reveal()],
      what,
      readError: readGoogleError,
    }).catch((error: unknown) => {
      throw retiredVersion(app, error);
    });
    rows.push(...(body?.results ?? []));
    pageToken = body?.nextPageToken || undefined;
    if (pageToken) guard.next(pageToken);
  } while (pageToken);
  return rows;
}

/**
 * Google answers a version it no longer serves with 404 "Method not found: API version v21 is not
 * available." That is the app's setting, not a missing campaign or account (exit 3 said so, with no
 * fix): exit 2 with the command that sets a served version, as LinkedIn's 426 gets. Every call that
 * names a version goes through here: connect's discovery, and the campaign commands (each starts with
 * a search).
 */
function retiredVersion(app: ProviderApp, error: unknown): unknown {
  if (!(error instanceof ProviderError) || error.status !== 404) return error;
  if (!/API version \S+ is not available/i.test(error.message)) return error;
  const current = PLATFORMS.google_ads.defaults.apiVersion;
  return new ProviderError(
    'invalid_request',
    `${error.message.replace(/\.$/, '')}; Google Ads no longer serves API version ${app.apiVersion}: set a current one with \`credvault apps update google_ads/${app.label} --api-version ${current}\` (or --api-version '' for credvault's default)`,
    { status: error.status, platformCode: error.platformCode, cause: error },
  );
}

/**
 * The login-customer-id for a connection's calls: the manager it was reached through. An account
 * granted directly needs none, and the app's manager may not reach it (USER_PERMISSION_DENIED). A
 * connection that does not say how it was reached (adopted before discovery said so, imported) takes
 * the app's manager, if any.
 */
export function googleLoginCustomerId(
  app: { loginCustomerId: string | null },
  details: Record<string, string>,
): string | null {
  if (details.login_customer_id) return details.login_customer_id;
  if (details.reached === 'direct') return null;
  return app.loginCustomerId ?? null;
}

async function discoverAccounts(
  app: ProviderApp,
  accessToken: Secret,
  options: CallOptions,
): Promise<AdAccount[]> {
  // listAccessibleCustomers ignores login-customer-id and lists only accounts granted directly.
  const { body } = await apiRequest<{ resourceNames?: string[] }>({
    method: 'GET',
    url: apiUrl(googleApiBase(app), `/${app.apiVersion}/customers:listAccessibleCustomers`),
    headers: googleHeaders(app, accessToken, null),
    signal: options.signal,
    secrets: [accessToken.reveal(), app.developerToken?.reveal()],
    what: 'listing accessible Google Ads customers',
    readError: readGoogleError,
  }).catch((error: unknown) => {
    throw retiredVersion(app, error);
  });
  const ids = (body?.resourceNames ?? []).map((name) => name.replace(/^customers\//, ''));
  const accounts = new Map<string, AdAccount>();
  const managers: string[] = [];
  for (const id of ids) {
    let unusable = false;
    const [row] = await googleSearch(
      app,
      accessToken,
      id,
      'SELECT customer.id, customer.descriptive_name, customer.currency_code, customer.manager, customer.status FROM customer',
      null,
      options,
      `reading Google Ads customer ${id}`,
    ).catch((error: unknown) => {
      // Skipped, as nothing this grant can call: a cancelled, suspended or closed account
      // (CUSTOMER_NOT_ENABLED on every call), and one this user may not read directly
      // (USER_PERMISSION_DENIED: its calls would be refused alike, and a manager it cannot read
      // would refuse its customer_client list too). Anything else (quota, Google down, the token or
      // the developer token refused) fails the listing, so that connect is tried again rather than
      // offering accounts without their names or leaving out a manager's clients.
      const code = error instanceof ProviderError ? error.platformCode : null;
      if (code !== 'CUSTOMER_NOT_ENABLED' && code !== 'USER_PERMISSION_DENIED') throw error;
      unusable = true;
      return [] as SearchRow[];
    });
    if (unusable || (row?.customer?.status && row.customer.status !== 'ENABLED')) continue;
    if (row?.customer?.manager) managers.push(id);
    accounts.set(id, {
      id,
      name: row?.customer?.descriptiveName ?? null,
      currency: row?.customer?.currencyCode ?? null,
      // Granted directly: its calls carry no login-customer-id (the app's manager may not reach it).
      details: { ...(row?.customer?.manager ? { manager: 'true' } : {}), reached: 'direct' },
    });
  }
  // Through a manager, the whole hierarchy below it: customer_client holds every direct and indirect
  // client, so accounts under a sub-manager are found too (Google's hierarchy sample filters on
  // level <= 1 only because it walks the tree one manager at a time). The manager is the app's login
  // customer id; without one, every manager the person was granted directly (an agency's user often
  // has its MCC only), each one's clients then called through it.
  for (const manager of app.loginCustomerId ? [app.loginCustomerId] : managers) {
    const rows = await googleSearch(
      app,
      accessToken,
      manager,
      'SELECT customer_client.client_customer, customer_client.level, customer_client.manager, customer_client.descriptive_name, customer_client.currency_code, customer_client.status, customer_client.id FROM customer_client',
      manager,
      options,
      `listing the accounts under manager ${manager}`,
    );
    for (const { customerClient: client } of rows) {
      const id = client?.id ?? client?.clientCustomer?.replace(/^customers\//, '');
      if (!id || id === manager || client?.manager) continue;
      if (client?.status && client.status !== 'ENABLED') continue;
      // Granted directly as well: reached without a manager, as it was listed above.
      if (accounts.get(id)?.details.reached === 'direct' && !app.loginCustomerId) continue;
      accounts.set(id, {
        id,
        name: client?.descriptiveName ?? accounts.get(id)?.name ?? null,
        currency: client?.currencyCode ?? accounts.get(id)?.currency ?? null,
        details: { login_customer_id: manager },
      });
    }
  }
  return [...accounts.values()];
}

export const googleAds: Provider = {
  id: 'google_ads',
  info,
  capabilities: info.capabilities,
  consentPage: 'https://myaccount.google.com/permissions',
  authorizationUrl: (app, request) =>
    buildAuthorizationUrl(app, request, {
      // A refresh token for web clients, and again on re-consent.
      access_type: 'offline',
      prompt: 'consent',
      include_granted_scopes: 'true',
    }),
  exchangeCode: (app, exchange, options) => exchangeCode(profile, app, exchange, options),
  refresh: (app, refreshToken, options) => refreshGrant(profile, app, refreshToken, options),
  async revoke(app, tokens, options) {
    const token = tokens.refreshToken ?? tokens.accessToken;
    if (token)
      await revokeToken(profile, app, token, tokens.refreshToken ? 'refresh_token' : 'access_token', options);
    return 'revoked';
  },
  discoverAccounts,
};
