import type { Secret } from '../../crypto/secret.js';
import { apiUrl, buildAuthorizationUrl } from '../authorize.js';
import { PLATFORMS } from '../catalog.js';
import { ProviderError } from '../errors.js';
import type { ErrorReader } from '../http.js';
import { apiRequest } from '../http.js';
import { exchangeCode, type OAuthProfile, refreshGrant } from '../oauth.js';
import { PageGuard } from '../paging.js';
import type { AdAccount, CallOptions, Provider, ProviderApp } from '../types.js';

const info = PLATFORMS.microsoft_ads;
export const CUSTOMER_API = 'https://clientcenter.api.bingads.microsoft.com';
export const CAMPAIGN_API = 'https://campaign.api.bingads.microsoft.com';

/**
 * The base URL of one of Microsoft Advertising's services. Customer Management and Campaign
 * Management have hosts of their own (clientcenter.api… and campaign.api…, in production and in the
 * sandbox, *.api.sandbox.bingads.microsoft.com): an app's one API override naming either of them
 * stands for the pair; any other override (a proxy, a test server) serves both.
 */
export function microsoftServiceBase(app: ProviderApp, service: 'clientcenter' | 'campaign'): string {
  const override = app.endpoints.apiBase;
  if (!override) return service === 'clientcenter' ? CUSTOMER_API : CAMPAIGN_API;
  const url = new URL(override);
  const match = /^(clientcenter|campaign)(\.api\.(?:sandbox\.)?bingads\.microsoft\.com)$/.exec(url.hostname);
  if (!match) return override;
  url.hostname = `${service}${match[2]}`;
  return url.toString().replace(/\/$/, '');
}

const profile: OAuthProfile = {
  // Web apps send their secret in the body; public (native) clients must send none.
  clientAuth: 'post_or_none',
  // Microsoft requires `scope` on the refresh grant, and takes it on the code grant. A refresh asks
  // for what the grant was given (its answers' `scope`, which leaves offline_access and openid out),
  // not the app's scopes of today: a scope added to the app since (`apps update --scope`) is one the
  // person never consented to, and Microsoft refuses the whole refresh as invalid_grant (AADSTS70000),
  // which would end every connection of the app at its next refresh.
  tokenParams: (app, grant, consentedScope) => ({
    scope:
      grant === 'refresh_token' && consentedScope?.trim()
        ? refreshScope(consentedScope, app.scopes)
        : app.scopes.join(' '),
  }),
};

/**
 * The scope of a refresh: the grant's resource scopes, with the app's scopes that are never echoed in
 * an answer's `scope` (offline_access, openid, profile, email) that it asks for.
 */
function refreshScope(consented: string, appScopes: string[]): string {
  const scopes = consented.split(/\s+/).filter(Boolean);
  for (const unechoed of ['offline_access', 'openid', 'profile', 'email']) {
    if (appScopes.includes(unechoed) && !scopes.includes(unechoed)) scopes.push(unechoed);
  }
  return scopes.join(' ');
}

interface BingFault {
  Errors?: Array<{ Code?: number; ErrorCode?: string; Message?: string }>;
  OperationErrors?: Array<{ Code?: number; ErrorCode?: string; Message?: string }>;
}

/** Microsoft Advertising faults: error 117 is throttling, 105/106 are credentials or access, 109 an expired token. */
export const readMicrosoftError: ErrorReader = (_status, body) => {
  const fault = body as BingFault | null;
  const first = fault?.Errors?.[0] ?? fault?.OperationErrors?.[0];
  const kind =
    first?.Code === 117
      ? 'rate_limited'
      : first?.Code === 109
        ? 'unauthenticated'
        : first?.Code === 105
          ? 'client'
          : first?.Code === 106
            ? 'forbidden'
            : null;
  return {
    code: first?.ErrorCode ?? (first?.Code ? String(first.Code) : null),
    message: first?.Message ?? null,
    kind,
    // 117 CallRateExceeded counts calls in a sliding minute; Microsoft says to retry after 60 seconds
    // (services protocol guide, "Handle Throttling") and sends no Retry-After.
    retryAfter: first?.Code === 117 ? 60 : null,
  };
};

/** Microsoft requires a developer token on every call (`apps add` and `import` require one too). */
export function microsoftHeaders(app: ProviderApp, accessToken: Secret): Record<string, string> {
  const developerToken = app.developerToken?.reveal();
  if (!developerToken)
    throw new ProviderError(
      'client',
      `app ${app.label} has no developer token, which ${info.displayName} requires on every call`,
    );
  return { authorization: `Bearer ${accessToken.reveal()}`, developertoken: developerToken };
}

async function discoverAccounts(
  app: ProviderApp,
  accessToken: Secret,
  options: CallOptions,
): Promise<AdAccount[]> {
  const base = microsoftServiceBase(app, 'clientcenter');
  const secrets = [accessToken.reveal(), app.developerToken?.reveal()];
  // The documented path to both ids: GetUser, then SearchAccounts by user id.
  const user = await apiRequest<{ User?: { Id?: string | number } }>({
    method: 'POST',
    url: apiUrl(base, `/CustomerManagement/${app.apiVersion}/User/Query`),
    headers: microsoftHeaders(app, accessToken),
    json: { UserId: null },
    signal: options.signal,
    secrets,
    what: 'reading the Microsoft Advertising user (GetUser)',
    readError: readMicrosoftError,
  });
  const userId = user.body?.User?.Id;
  if (userId === undefined || userId === null) return [];
  const accounts: AdAccount[] = [];
  // Pages by index: a server that ignores it (the same full page again) or never runs out is
  // looping (the same guard as every platform's paging), not a user with that many accounts.
  const guard = new PageGuard(
    'Microsoft Advertising',
    'listing Microsoft Advertising accounts (SearchAccounts)',
  );
  for (let index = 0; ; index++) {
    const page = await apiRequest<{
      Accounts?: Array<{
        Id?: string | number;
        Name?: string;
        Number?: string;
        CurrencyCode?: string;
        ParentCustomerId?: string | number;
      }>;
    }>({
      method: 'POST',
      url: apiUrl(base, `/CustomerManagement/${app.apiVersion}/Accounts/Search`),
      headers: microsoftHeaders(app, accessToken),
      json: {
        Predicates: [{ Field: 'UserId', Operator: 'Equals', Value: String(userId) }],
        PageInfo: { Index: index, Size: 100 },
      },
      signal: options.signal,
      secrets,
      what: 'listing Microsoft Advertising accounts (SearchAccounts)',
      readError: readMicrosoftError,
    });
    const batch = page.body?.Accounts ?? [];
    for (const account of batch) {
      if (account.Id === undefined) continue;
      accounts.push({
        id: String(account.Id),
        name: account.Name ?? null,
        currency: account.CurrencyCode ?? null,
        details: {
          ...(account.ParentCustomerId !== undefined
            ? { customer_id: String(account.ParentCustomerId) }
            : {}),
          ...(account.Number ? { account_number: account.Number } : {}),
        },
      });
    }
    if (batch.length < 100) break;
    guard.next(batch.map((account) => String(account.Id)).join(','));
  }
  return accounts;
}

export const microsoftAds: Provider = {
  id: 'microsoft_ads',
  info,
  capabilities: info.capabilities,
  consentPage:
    'https://account.live.com/consent/Manage (Microsoft accounts) or https://myapplications.microsoft.com (work accounts)',
  authorizationUrl: (app, request) => buildAuthorizationUrl(app, request, { response_mode: 'query' }),
  exchangeCode: (app, exchange, options) => exchangeCode(profile, app, exchange, options),
  refresh: (app, refreshToken, options, consentedScope) =>
    refreshGrant(profile, app, refreshToken, options, consentedScope),
  // Microsoft's identity platform has no revocation endpoint: consent is removed by the person.
  revoke: async () => 'no_endpoint',
  discoverAccounts,
};
