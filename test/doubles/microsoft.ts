/**
 * Microsoft double: login.microsoftonline.com (identity platform v2.0) and the Microsoft Advertising
 * REST hosts (clientcenter.api.bingads.microsoft.com, campaign.api.…) on one port. See
 * shared/providers.md §2.
 */
import { randomInt, randomUUID } from 'node:crypto';
import {
  type AuthorizeErrorKind,
  type ClientAuth,
  type CommonDoubleOptions,
  clone,
  credentialEquals,
  type Double,
  escapeHtml,
  html,
  json,
  type RecordedRequest,
  type Reply,
  type RouteContext,
  type RouteDef,
  redirectUriMatches,
  startDouble,
  type TokenErrorKind,
} from './common.js';

export const MICROSOFT_ADS_SCOPE = 'https://ads.microsoft.com/msads.manage';
/** The official SDK also knows this older scope (providers.md §2.A). */
export const MICROSOFT_ADS_LEGACY_SCOPE = 'https://ads.microsoft.com/ads.manage';
export const MICROSOFT_PREFIXES = { access: 'EwB', refresh: 'M.C5_BAY.', code: 'M.C5_BL2.2.U.' };
/** Scopes that are not resource scopes and are not echoed in `scope` answers. */
const OIDC_SCOPES = new Set(['offline_access', 'openid', 'profile', 'email']);

export interface MicrosoftUser {
  Id: string;
  CustomerId: string;
  UserName: string;
  Name?: { FirstName: string; LastName: string; MiddleInitial: string | null };
  [field: string]: unknown;
}

export interface MicrosoftCustomerRole {
  RoleId: number;
  CustomerId: string;
  AccountIds: string[] | null;
  LinkedAccountIds: string[] | null;
  CustomerLinkPermission: string | null;
}

export interface MicrosoftAccount {
  Id: string;
  Name: string;
  Number: string;
  CurrencyCode: string;
  ParentCustomerId: string;
  AccountLifeCycleStatus: string;
  PauseReason?: number | null;
  [field: string]: unknown;
}

export interface MicrosoftAccounts {
  user: MicrosoftUser;
  customerRoles: MicrosoftCustomerRole[];
  accounts: MicrosoftAccount[];
}

export interface MicrosoftSettings {
  /** Re-presenting a refresh token that a rotation replaced revokes the whole grant. */
  strictRotation: boolean;
  /** Fixed access-token lifetime; null: random in 3600–5400 s (60–90 min, the documented default). */
  fixedExpiresIn: number | null;
  /** Refresh-token lifetime, moved forward by each refresh (90 days). */
  refreshTokenTtlSeconds: number;
  /** Accepted DeveloperToken values (null: any non-empty value). */
  developerTokens: string[] | null;
  /** Tenant segment of the OAuth paths. */
  tenant: string;
}

export interface MicrosoftDoubleOptions extends CommonDoubleOptions<MicrosoftAccounts> {
  strictRotation?: boolean;
  /** Fixed `expires_in`; default random in 3600–5400. (`accessTokenTtlSeconds` does the same.) */
  expiresIn?: number;
  developerTokens?: string[] | null;
  tenant?: string;
}

export type MicrosoftDouble = Double<MicrosoftAccounts, MicrosoftSettings>;

export const MICROSOFT_DEFAULT_CLIENT = {
  clientId: '00000000-0000-0000-0000-00000000d0b1',
  clientSecret: 'msft~double~secret',
  // Microsoft ignores the port of a loopback redirect URI.
  redirectUris: ['http://localhost', 'http://127.0.0.1'],
};

export const MICROSOFT_DEFAULT_ACCOUNTS: MicrosoftAccounts = {
  user: {
    Id: '123',
    CustomerId: '456',
    UserName: 'ops@example.com',
    Name: { FirstName: 'Ada', LastName: 'Ops', MiddleInitial: null },
  },
  customerRoles: [
    // 41: Super Admin.
    { RoleId: 41, CustomerId: '456', AccountIds: null, LinkedAccountIds: null, CustomerLinkPermission: null },
  ],
  accounts: [
    {
      Id: '987',
      Name: 'Acme Search US',
      Number: 'F12ABCDE',
      CurrencyCode: 'USD',
      ParentCustomerId: '456',
      AccountLifeCycleStatus: 'Active',
      PauseReason: null,
    },
    {
      Id: '988',
      Name: 'Acme Search UK',
      Number: 'F12ABCDF',
      CurrencyCode: 'GBP',
      ParentCustomerId: '456',
      AccountLifeCycleStatus: 'Active',
      PauseReason: null,
    },
  ],
};

// --- OAuth ------------------------------------------------------------------------------------------

/** An identity-platform error body: error, error_description (AADSTS…), error_codes, trace ids. */
export function aadError(status: number, error: string, code: number, message: string): Reply {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date()
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
  return json(status, {
    error,
    error_description: `AADSTS${code}: ${message} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  });
}

const DEAD_GRANT =
  'The user could not be authenticated or the grant is expired. The user must first sign in and if needed grant the client application access to the requested scope.';

function tokenError(kind: TokenErrorKind, detail: string): Reply {
  switch (kind) {
    case 'missing_parameter':
      return aadError(
        400,
        'invalid_request',
        900144,
        `The request body must contain the following parameter: '${detail}'.`,
      );
    case 'unsupported_grant_type':
      return aadError(
        400,
        'unsupported_grant_type',
        70003,
        `The app requested an unsupported grant type '${detail}'.`,
      );
    case 'code_reused':
      return aadError(
        400,
        'invalid_grant',
        54005,
        'OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.',
      );
    case 'code_expired':
      return aadError(
        400,
        'invalid_grant',
        70008,
        'The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.',
      );
    case 'code_unknown':
    case 'code_client_mismatch':
      return aadError(400, 'invalid_grant', 9002313, 'Invalid request. Request is malformed or invalid.');
    case 'code_redirect_mismatch':
      return aadError(
        400,
        'invalid_grant',
        50011,
        'The redirect URI specified in the request does not match the redirect URI used to obtain the authorization code.',
      );
    case 'pkce_missing':
    case 'pkce_mismatch':
      // [guess] exact AADSTS code for PKCE failures.
      return aadError(
        400,
        'invalid_grant',
        501481,
        'The Code_Verifier does not match the code_challenge supplied in the authorization request.',
      );
    case 'refresh_client_mismatch':
      return aadError(400, 'invalid_grant', 70000, 'Provided grant is invalid or malformed.');
    default:
      return aadError(400, 'invalid_grant', 70000, DEAD_GRANT);
  }
}

/**
 * Confidential clients send client_secret in the body (client_secret_basic, listed in discovery, is
 * accepted too); public clients must not send one.
 */
function authenticateClient(req: RecordedRequest, double: MicrosoftDouble): ClientAuth {
  const form = req.form ?? new URLSearchParams();
  const clientId = form.get('client_id') ?? req.basic?.user ?? null;
  if (!clientId)
    return {
      reply: aadError(
        400,
        'invalid_request',
        900144,
        "The request body must contain the following parameter: 'client_id'.",
      ),
    };
  const client = double.clients.get(clientId);
  if (!client)
    return {
      reply: aadError(
        400,
        'unauthorized_client',
        700016,
        `Application with identifier '${clientId}' was not found in the directory 'Microsoft Accounts'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
      ),
    };
  const secret = form.get('client_secret') ?? (req.basic ? req.basic.pass : null);
  if (client.public) {
    if (secret !== null && secret !== '')
      return {
        reply: aadError(400, 'invalid_request', 700025, "Public clients can't send a client secret."),
      };
    return { client };
  }
  if (secret === null || secret === '')
    return {
      reply: aadError(
        401,
        'invalid_client',
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
      ),
    };
  if (!credentialEquals(secret, client.clientSecret))
    return {
      reply: aadError(
        401,
        'invalid_client',
        7000215,
        `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${client.clientId}'.`,
      ),
    };
  return { client };
}

function resourceScopes(scopes: string[]): string[] {
  return scopes.filter((s) => !OIDC_SCOPES.has(s));
}

/** The refresh grant must carry `scope`, naming only scopes the grant has. */
function beforeRefresh(req: RecordedRequest, double: MicrosoftDouble): Reply | undefined {
  const scope = req.form?.get('scope');
  if (!scope)
    return aadError(
      400,
      'invalid_request',
      90014,
      "The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.",
    );
  const presented = req.form?.get('refresh_token') ?? '';
  const grant = double.findGrant(presented);
  if (grant && !resourceScopes(double.normalizeScope(scope)).every((s) => grant.scope.includes(s)))
    return aadError(
      400,
      'invalid_grant',
      70000,
      'The request was denied because one or more scopes requested are unauthorized or expired. The user must first sign in and grant the client application access to the requested scope.',
    );
  return undefined;
}

function authorizeError(kind: AuthorizeErrorKind, detail: string): Reply {
  const codes: Partial<Record<AuthorizeErrorKind, [number, string]>> = {
    unknown_client: [700016, 'Application was not found in the directory.'],
    redirect_uri_mismatch: [
      50011,
      'The redirect URI specified in the request does not match the redirect URIs configured for the application.',
    ],
    missing_scope: [900144, "The request body must contain the following parameter: 'scope'."],
  };
  const [code, message] = codes[kind] ?? [90014, detail];
  return html(
    400,
    `<!doctype html><html><head><title>Sign in to your account</title></head><body>
<h1>Sorry, but we're having trouble signing you in.</h1>
<p>AADSTS${code}: ${escapeHtml(message)}</p><p>${escapeHtml(detail)}</p></body></html>`,
  );
}

// --- Customer Management REST -----------------------------------------------------------------------

/** A Microsoft Advertising REST fault (AdApiFaultDetail). */
export function adApiFault(status: number, code: number, errorCode: string, message: string): Reply {
  return json(status, {
    TrackingId: randomUUID(),
    Type: 'AdApiFaultDetail',
    Errors: [{ Code: code, Detail: null, ErrorCode: errorCode, Message: message, Type: 'AdApiError' }],
  });
}

const INVALID_CREDENTIALS =
  'Authentication failed. Either supplied credentials are invalid or the account is inactive';

export interface MicrosoftApiCall {
  accounts: MicrosoftAccounts;
}

/**
 * What every Microsoft Advertising REST call needs: `Authorization: Bearer` with the msads scope and a
 * `DeveloperToken` header. Returns the call or the fault to answer.
 */
export function checkMicrosoftApiCall(
  ctx: RouteContext<MicrosoftAccounts, MicrosoftSettings>,
): MicrosoftApiCall | Reply {
  const { req, double } = ctx;
  const auth = double.authenticate(req);
  if (!auth.ok) {
    if (auth.reason === 'expired')
      return adApiFault(
        401,
        109,
        'AuthenticationTokenExpired',
        'Authentication token expired. Please renew it or obtain a new token.',
      );
    return adApiFault(401, 105, 'InvalidCredentials', INVALID_CREDENTIALS);
  }
  if (!auth.access.scope.some((s) => s === MICROSOFT_ADS_SCOPE || s === MICROSOFT_ADS_LEGACY_SCOPE))
    return adApiFault(401, 105, 'InvalidCredentials', INVALID_CREDENTIALS);
  const developerToken = req.headers['developertoken'];
  const allowed = double.settings.developerTokens;
  if (!developerToken || (allowed !== null && !allowed.includes(developerToken)))
    return adApiFault(400, 105, 'InvalidCredentials', INVALID_CREDENTIALS);
  return { accounts: auth.accounts };
}

type Ctx = RouteContext<MicrosoftAccounts, MicrosoftSettings>;

function getUser(ctx: Ctx): Reply {
  const call = checkMicrosoftApiCall(ctx);
  if ('status' in call) return call;
  const body = (ctx.req.json ?? {}) as { UserId?: unknown };
  const { user, customerRoles } = call.accounts;
  if (body.UserId !== undefined && body.UserId !== null && String(body.UserId) !== user.Id)
    return adApiFault(400, 106, 'UserIsNotAuthorized', 'The user does not represent a authorized developer.');
  return json(200, { User: user, CustomerRoles: customerRoles });
}

interface Predicate {
  Field?: unknown;
  Operator?: unknown;
  Value?: unknown;
}

function visibleAccounts(accounts: MicrosoftAccounts): MicrosoftAccount[] {
  return accounts.accounts.filter((a) =>
    accounts.customerRoles.some(
      (r) =>
        (r.CustomerId === a.ParentCustomerId && r.AccountIds === null) ||
        (r.AccountIds ?? []).includes(a.Id) ||
        (r.LinkedAccountIds ?? []).includes(a.Id),
    ),
  );
}

function matchesPredicate(
  account: MicrosoftAccount,
  p: Predicate,
  accounts: MicrosoftAccounts,
): boolean | null {
  const value = String(p.Value ?? '');
  const op = String(p.Operator ?? '');
  switch (p.Field) {
    case 'UserId':
      return op === 'Equals' ? value === accounts.user.Id : null;
    case 'CustomerId':
      return op === 'Equals' ? account.ParentCustomerId === value : null;
    case 'AccountId':
      return op === 'Equals' ? account.Id === value : null;
    case 'AccountNumber':
      return op === 'Equals' ? account.Number === value : null;
    case 'AccountLifeCycleStatus':
      return op === 'Equals' ? account.AccountLifeCycleStatus === value : null;
    case 'AccountName':
      if (op === 'Equals') return account.Name === value;
      if (op === 'Contains') return account.Name.toLowerCase().includes(value.toLowerCase());
      if (op === 'StartsWith') return account.Name.toLowerCase().startsWith(value.toLowerCase());
      return null;
    default:
      return null;
  }
}

function searchAccounts(ctx: Ctx): Reply {
  const call = checkMicrosoftApiCall(ctx);
  if ('status' in call) return call;
  const body = (ctx.req.json ?? {}) as {
    Predicates?: unknown;
    PageInfo?: { Index?: unknown; Size?: unknown };
  };
  if (!Array.isArray(body.Predicates) || body.Predicates.length === 0)
    return adApiFault(400, 1229, 'InvalidPredicates', 'Predicates are required.');
  if (!body.PageInfo || typeof body.PageInfo.Index !== 'number' || typeof body.PageInfo.Size !== 'number')
    // [guess] error code for a missing PageInfo.
    return adApiFault(400, 1226, 'PageInfoRequired', 'PageInfo is required.');
  const predicates = body.Predicates as Predicate[];
  let matched = visibleAccounts(call.accounts);
  for (const predicate of predicates) {
    const results = matched.map((a) => matchesPredicate(a, predicate, call.accounts));
    if (results.some((r) => r === null))
      return adApiFault(
        400,
        1229,
        'InvalidPredicates',
        `Unsupported predicate ${JSON.stringify(predicate)}.`,
      );
    matched = matched.filter((_a, i) => results[i] === true);
  }
  const { Index, Size } = body.PageInfo;
  if (Size < 1 || Size > 1000)
    return adApiFault(400, 1227, 'InvalidPageInfo', 'PageInfo.Size must be 1-1000.');
  return json(200, { Accounts: matched.slice(Index * Size, (Index + 1) * Size) });
}

const routes: RouteDef<MicrosoftAccounts, MicrosoftSettings>[] = [
  { method: 'POST', pattern: '/CustomerManagement/v13/User/Query', handler: getUser },
  { method: 'POST', pattern: '/CustomerManagement/v13/Accounts/Search', handler: searchAccounts },
];

export async function startMicrosoftDouble(options: MicrosoftDoubleOptions = {}): Promise<MicrosoftDouble> {
  const settings: MicrosoftSettings = {
    strictRotation: options.strictRotation ?? false,
    fixedExpiresIn: options.expiresIn ?? null,
    refreshTokenTtlSeconds: 90 * 24 * 3600,
    developerTokens: options.developerTokens ?? null,
    tenant: options.tenant ?? 'common',
  };
  const base = `/${settings.tenant}/oauth2/v2.0`;
  return startDouble<MicrosoftAccounts, MicrosoftSettings>('microsoft', routes, {
    ...options,
    settings,
    defaultAccounts: clone(MICROSOFT_DEFAULT_ACCOUNTS),
    defaultClientRegistration: MICROSOFT_DEFAULT_CLIENT,
    oauth: {
      authorizePath: `${base}/authorize`,
      tokenPath: `${base}/token`,
      // No revocation endpoint (discovery has none): /…/revoke answers 404.
      prefixes: MICROSOFT_PREFIXES,
      pkce: () => true,
      redirectMatches: (registered, requested) => redirectUriMatches(registered, requested, 'ignored'),
      authorizeError,
      denyParams: () => ({
        error: 'access_denied',
        error_description: 'AADSTS65004: User declined to consent to access the app.',
      }),
      // offline_access is what earns a refresh token.
      issuesRefreshToken: (request) => request.scope.includes('offline_access'),
      authenticateClient,
      accessTtlSeconds: (double) => double.settings.fixedExpiresIn ?? randomInt(3600, 5401),
      refreshTtlSeconds: (double) => double.settings.refreshTokenTtlSeconds,
      refreshAnswer: 'rotate',
      strictRotation: (double) => double.settings.strictRotation,
      slidingRefreshExpiry: true,
      beforeRefresh,
      tokenError,
      tokenResponse: ({ grant, access, refreshToken }) => {
        const expiresIn = Math.round((access.expiresAt - access.issuedAt) / 1000);
        const body: Record<string, unknown> = {
          token_type: 'Bearer',
          // [guess] offline_access/openid are not echoed in `scope`.
          scope: resourceScopes(grant.scope).join(' '),
          expires_in: expiresIn,
          ext_expires_in: expiresIn,
          access_token: access.token,
        };
        if (refreshToken !== undefined) body['refresh_token'] = refreshToken;
        return body;
      },
    },
  });
}
