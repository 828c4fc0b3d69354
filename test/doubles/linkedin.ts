/**
 * LinkedIn double: www.linkedin.com/oauth/v2 (standard 3-legged web flow, MDP refresh tokens) and
 * api.linkedin.com/rest (versioned Marketing API) on one port. See shared/providers.md §3.
 */
import {
  type ClientAuth,
  type CommonDoubleOptions,
  clone,
  credentialEquals,
  type Double,
  empty,
  escapeHtml,
  html,
  json,
  type RecordedRequest,
  type Reply,
  type RouteContext,
  type RouteDef,
  redirectUriMatches,
  revokeToken,
  startDouble,
  type TokenErrorKind,
} from './common.js';

export const LINKEDIN_PREFIXES = { access: 'AQV', refresh: 'AQW', code: 'AQT' };

export interface LinkedInAdAccount {
  id: number;
  name: string;
  currency: string;
  status: string;
  type: string;
  reference: string;
  test: boolean;
  [field: string]: unknown;
}

export interface LinkedInAccounts {
  /** The authenticated member. */
  member: string;
  adAccounts: LinkedInAdAccount[];
  /** The member's role on each ad account (accounts without a role are invisible to them). */
  roles: Array<{ account: number; role: string }>;
}

export interface LinkedInSettings {
  /** App is an approved MDP partner: code exchanges return refresh tokens (default true). */
  refreshTokens: boolean;
  /** Refresh-token life from first consent, not moved by refreshing (365 days). */
  refreshTokenTtlSeconds: number;
  /** Oldest LinkedIn-Version still served (older → 426). 202511 sunset on 2026-11-16. */
  oldestVersion: string;
  /** Newest released version (newer → 426). [guess] */
  latestVersion: string;
  /** Answer 400 when X-Restli-Protocol-Version: 2.0.0 is missing. [guess: the real API may accept 1.0] */
  requireRestliProtocol: boolean;
  /** Error code of the denial redirect (LinkedIn sends user_cancelled_authorize, not access_denied). */
  denyError: { error: string; error_description?: string };
}

export interface LinkedInDoubleOptions extends CommonDoubleOptions<LinkedInAccounts> {
  refreshTokens?: boolean;
  refreshTokenTtlSeconds?: number;
  oldestVersion?: string;
  latestVersion?: string;
  requireRestliProtocol?: boolean;
  denyError?: { error: string; error_description?: string };
}

export type LinkedInDouble = Double<LinkedInAccounts, LinkedInSettings>;

export const LINKEDIN_DEFAULT_CLIENT = {
  clientId: '78doublelinkedin',
  clientSecret: 'WPL_AP1.double.secret',
  redirectUris: ['http://localhost:8765/callback'],
};

export const LINKEDIN_DEFAULT_ACCOUNTS: LinkedInAccounts = {
  member: 'urn:li:person:abc',
  adAccounts: [
    {
      id: 5101,
      name: 'Acme LinkedIn',
      currency: 'USD',
      status: 'ACTIVE',
      type: 'BUSINESS',
      reference: 'urn:li:organization:1',
      test: false,
    },
    {
      id: 5102,
      name: 'Acme LinkedIn EU',
      currency: 'EUR',
      status: 'ACTIVE',
      type: 'BUSINESS',
      reference: 'urn:li:organization:1',
      test: false,
    },
  ],
  roles: [
    { account: 5101, role: 'ACCOUNT_MANAGER' },
    { account: 5102, role: 'VIEWER' },
  ],
};

// --- OAuth ------------------------------------------------------------------------------------------

function oauthError(status: number, error: string, description: string): Reply {
  return json(status, { error, error_description: description });
}

const DEAD_REFRESH = 'The provided authorization grant or refresh token is invalid, expired or revoked';
const BAD_CODE =
  'Unable to retrieve access token: appid/redirect uri/code verifier does not match authorization code. Or authorization code expired. Or external member binding exists';

function tokenError(kind: TokenErrorKind, detail: string): Reply {
  switch (kind) {
    case 'missing_parameter':
      return oauthError(400, 'invalid_request', `A required parameter "${detail}" is missing`);
    case 'unsupported_grant_type':
      return oauthError(400, 'unsupported_grant_type', `Grant type "${detail}" is not supported`);
    case 'refresh_dead':
    case 'refresh_expired':
    case 'refresh_reused':
    case 'refresh_client_mismatch':
      return oauthError(400, 'invalid_request', DEAD_REFRESH);
    default:
      return oauthError(400, 'invalid_request', BAD_CODE);
  }
}

/** client_secret_post only: credentials in an Authorization: Basic header are not looked at. */
function authenticateClient(req: RecordedRequest, double: LinkedInDouble): ClientAuth {
  const form = req.form ?? new URLSearchParams();
  const clientId = form.get('client_id');
  const secret = form.get('client_secret');
  const failed = { reply: oauthError(401, 'invalid_client', 'Client authentication failed') };
  if (!clientId) return req.basic ? failed : { reply: tokenError('missing_parameter', 'client_id') };
  const client = double.clients.get(clientId);
  if (!client) return failed;
  if (client.public && !secret) return { client };
  if (!secret) return req.basic ? failed : { reply: tokenError('missing_parameter', 'client_secret') };
  if (!credentialEquals(secret, client.clientSecret)) return failed;
  return { client };
}

function authorizeError(kind: string, detail: string): Reply {
  const message =
    kind === 'redirect_uri_mismatch' ? 'The redirect_uri does not match the registered value' : detail;
  return html(
    400,
    `<!doctype html><html><head><title>LinkedIn</title></head><body><h1>Bummer, something went wrong.</h1>
<p>${escapeHtml(message)}</p></body></html>`,
  );
}

// --- Marketing API ----------------------------------------------------------------------------------

function restliError(status: number, code: string, message: string, serviceErrorCode?: number): Reply {
  const body: Record<string, unknown> = { status };
  if (serviceErrorCode !== undefined) body['serviceErrorCode'] = serviceErrorCode;
  body['code'] = code;
  body['message'] = message;
  return json(status, body, { 'x-restli-protocol-version': '2.0.0' });
}

function versionNumber(version: string): number {
  return Number(version.replace('.', '').padEnd(8, '0'));
}

export interface LinkedInApiCall {
  accounts: LinkedInAccounts;
  scope: string[];
  version: string;
}

/**
 * What every /rest call needs: a live Bearer token, `LinkedIn-Version: YYYYMM` within the served range,
 * and `X-Restli-Protocol-Version: 2.0.0`. Returns the call or the error to answer.
 */
export function checkLinkedInApiCall(
  ctx: RouteContext<LinkedInAccounts, LinkedInSettings>,
): LinkedInApiCall | Reply {
  const { req, double } = ctx;
  const auth = double.authenticate(req);
  if (!auth.ok) {
    if (auth.reason === 'missing')
      return restliError(401, 'EMPTY_ACCESS_TOKEN', 'Empty oauth2 access token', 65604);
    if (auth.reason === 'expired')
      return restliError(401, 'EXPIRED_ACCESS_TOKEN', 'The token used in the request has expired', 65601);
    if (auth.reason === 'revoked')
      return restliError(
        401,
        'REVOKED_ACCESS_TOKEN',
        'The token used in the request has been revoked by the user',
        65602,
      );
    return restliError(401, 'INVALID_ACCESS_TOKEN', 'Invalid access token', 65600);
  }
  const version = req.headers['linkedin-version'];
  if (!version)
    return restliError(
      400,
      'VERSION_MISSING',
      'A version must be present. Please specify a version by adding the LinkedIn-Version header.',
    );
  if (!/^\d{6}(\.\d{2})?$/.test(version))
    return restliError(400, 'INVALID_VERSION', `Invalid LinkedIn-Version header value: ${version}`);
  const { oldestVersion, latestVersion, requireRestliProtocol } = double.settings;
  if (
    versionNumber(version) < versionNumber(oldestVersion) ||
    versionNumber(version) > versionNumber(latestVersion)
  )
    return restliError(426, 'NONEXISTENT_VERSION', `Requested version ${version} is not active`);
  if (requireRestliProtocol && req.headers['x-restli-protocol-version'] !== '2.0.0')
    return restliError(
      400,
      'ILLEGAL_ARGUMENT',
      'X-Restli-Protocol-Version 2.0.0 is required for this resource.',
    );
  if (!auth.access.scope.some((s) => s === 'r_ads' || s === 'rw_ads'))
    return restliError(
      403,
      'ACCESS_DENIED',
      `Not enough permissions to access: adAccounts.GET.${version}`,
      100,
    );
  return { accounts: auth.accounts, scope: auth.access.scope, version };
}

type Ctx = RouteContext<LinkedInAccounts, LinkedInSettings>;

function adAccountUsers(ctx: Ctx): Reply {
  const call = checkLinkedInApiCall(ctx);
  if ('status' in call) return call;
  if (ctx.req.query.get('q') !== 'authenticatedUser')
    return restliError(400, 'ILLEGAL_ARGUMENT', 'Invalid query parameters passed to request');
  const start = Number(ctx.req.query.get('start') ?? '0');
  const count = Number(ctx.req.query.get('count') ?? '10');
  const all = call.accounts.roles.map((r) => ({
    account: `urn:li:sponsoredAccount:${r.account}`,
    role: r.role,
    user: call.accounts.member,
  }));
  const elements = all.slice(start, start + count);
  return json(
    200,
    { elements, paging: { count, start, total: all.length, links: [] } },
    { 'x-restli-protocol-version': '2.0.0' },
  );
}

function visible(accounts: LinkedInAccounts): LinkedInAdAccount[] {
  return accounts.adAccounts.filter((a) => accounts.roles.some((r) => r.account === a.id));
}

function adAccount(ctx: Ctx): Reply {
  const call = checkLinkedInApiCall(ctx);
  if ('status' in call) return call;
  const id = ctx.params['id'] ?? '';
  if (!/^\d+$/.test(id)) return restliError(400, 'ILLEGAL_ARGUMENT', `Invalid key: ${id}`);
  const account = call.accounts.adAccounts.find((a) => a.id === Number(id));
  if (!account) return restliError(404, 'NOT_FOUND', `Ad account ${id} does not exist`);
  if (!call.accounts.roles.some((r) => r.account === account.id))
    return restliError(
      403,
      'ACCESS_DENIED',
      `Not enough permissions to access: adAccounts.GET.${call.version}`,
      100,
    );
  return json(200, account, { 'x-restli-protocol-version': '2.0.0' });
}

/** `GET /rest/adAccounts?q=search&pageSize=…&pageToken=…` (status filter not interpreted). */
function searchAdAccounts(ctx: Ctx): Reply {
  const call = checkLinkedInApiCall(ctx);
  if ('status' in call) return call;
  if (ctx.req.query.get('q') !== 'search')
    return restliError(400, 'ILLEGAL_ARGUMENT', 'Invalid query parameters passed to request');
  const size = Number(ctx.req.query.get('pageSize') ?? '1000');
  const token = ctx.req.query.get('pageToken');
  const offset = token ? Number(Buffer.from(token, 'base64url').toString('utf8')) : 0;
  if (Number.isNaN(offset)) return restliError(400, 'ILLEGAL_ARGUMENT', 'Invalid pageToken');
  const all = visible(call.accounts);
  const elements = all.slice(offset, offset + size);
  const metadata: Record<string, unknown> = {};
  if (offset + size < all.length)
    metadata['nextPageToken'] = Buffer.from(String(offset + size), 'utf8').toString('base64url');
  return json(200, { elements, metadata }, { 'x-restli-protocol-version': '2.0.0' });
}

function revoke({ req, double }: Ctx): Reply {
  const auth = authenticateClient(req, double);
  if ('reply' in auth) return auth.reply;
  const value = req.form?.get('token');
  if (!value) return tokenError('missing_parameter', 'token');
  // [guess] a refresh token kills its grant; an access token only itself; unknown tokens still answer 200.
  revokeToken(double, value, false);
  return empty(200);
}

const routes: RouteDef<LinkedInAccounts, LinkedInSettings>[] = [
  { method: 'GET', pattern: '/rest/adAccountUsers', handler: adAccountUsers },
  { method: 'GET', pattern: '/rest/adAccounts', handler: searchAdAccounts },
  { method: 'GET', pattern: '/rest/adAccounts/{id}', handler: adAccount },
];

export async function startLinkedInDouble(options: LinkedInDoubleOptions = {}): Promise<LinkedInDouble> {
  const settings: LinkedInSettings = {
    refreshTokens: options.refreshTokens ?? true,
    refreshTokenTtlSeconds: options.refreshTokenTtlSeconds ?? 31_536_000,
    oldestVersion: options.oldestVersion ?? '202512',
    latestVersion: options.latestVersion ?? '202611',
    requireRestliProtocol: options.requireRestliProtocol ?? true,
    denyError: options.denyError ?? {
      error: 'user_cancelled_authorize',
      error_description: 'The user cancelled the authorization',
    },
  };
  return startDouble<LinkedInAccounts, LinkedInSettings>('linkedin', routes, {
    ...options,
    settings,
    defaultAccounts: clone(LINKEDIN_DEFAULT_ACCOUNTS),
    defaultClientRegistration: LINKEDIN_DEFAULT_CLIENT,
    notFound: () => restliError(404, 'NOT_FOUND', 'Resource not found'),
    oauth: {
      authorizePath: '/oauth/v2/authorization',
      tokenPath: '/oauth/v2/accessToken',
      revokePath: '/oauth/v2/revoke',
      prefixes: LINKEDIN_PREFIXES,
      // The standard web flow has no PKCE: code_challenge / code_verifier are ignored.
      pkce: () => false,
      redirectMatches: (registered, requested) => redirectUriMatches(registered, requested, 'exact'),
      authorizeError,
      denyParams: (double) => {
        const { error, error_description } = double.settings.denyError;
        const params: Record<string, string> = { error };
        if (error_description !== undefined) params['error_description'] = error_description;
        return params;
      },
      issuesRefreshToken: (_request, double) => double.settings.refreshTokens,
      authenticateClient,
      accessTtlSeconds: () => 5_184_000,
      refreshTtlSeconds: (double) => double.settings.refreshTokenTtlSeconds,
      // Refreshing answers the same refresh token string with the remaining (not reset) lifetime.
      refreshAnswer: 'same',
      tokenError,
      // No token_type field, and scope is comma-separated.
      tokenResponse: ({ double, grant, access, refreshToken }) => {
        const body: Record<string, unknown> = {
          access_token: access.token,
          expires_in: Math.round((access.expiresAt - access.issuedAt) / 1000),
        };
        if (refreshToken !== undefined) {
          body['refresh_token'] = refreshToken;
          if (grant.refreshExpiresAt !== null)
            body['refresh_token_expires_in'] = Math.max(
              0,
              Math.round((grant.refreshExpiresAt - double.now()) / 1000),
            );
        }
        body['scope'] = grant.scope.join(',');
        return body;
      },
      revoke,
    },
  });
}
