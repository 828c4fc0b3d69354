/**
 * Microsoft double: login.microsoftonline.com (identity platform v2.0) and the Microsoft Advertising
 * REST hosts (clientcenter.api.bingads.microsoft.com, campaign.api.…) on one port. See
 * shared/providers.md §2.
 *
 * Campaign Management (GetCampaignsByAccountId, UpdateCampaigns) follows the REST reference pages of
 * learn.microsoft.com/advertising/campaign-management-service and the Operation Error Codes guide; what
 * those pages do not say is marked [guess].
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
  idToken,
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

/** CampaignStatus value set. Get operations never return Deleted campaigns. */
export type MicrosoftCampaignStatus =
  | 'Active'
  | 'Paused'
  | 'BudgetPaused'
  | 'BudgetAndManualPaused'
  | 'Deleted'
  | 'Suspended';

/** CampaignType value set (DynamicSearchAds campaigns are no longer returned: they became Search). */
export type MicrosoftCampaignType =
  | 'Search'
  | 'Shopping'
  | 'DynamicSearchAds'
  | 'Audience'
  | 'Hotel'
  | 'PerformanceMax';

/** BudgetLimitType values of daily budgets; DailyBudgetAccelerated is for Audience campaigns only. */
export type MicrosoftBudgetType = 'DailyBudgetStandard' | 'DailyBudgetAccelerated';

/**
 * A campaign as the double keeps it (served as the REST `Campaign` object: ids as strings, DailyBudget a
 * number in the account's currency).
 */
export interface MicrosoftCampaign {
  accountId: string;
  id: string;
  name: string;
  status: MicrosoftCampaignStatus;
  campaignType: MicrosoftCampaignType;
  budgetType: MicrosoftBudgetType;
  /** The campaign's own daily budget; with a shared budget (budgetId set) the Budget's amount is served. */
  dailyBudget: number | null;
  /** Shared Budget id, or null when the campaign has its own budget. */
  budgetId: string | null;
  /** More Campaign elements, served as they are (REST names, e.g. `{ SubType: 'ShoppingSmartAds' }`). */
  extra?: Record<string, unknown>;
}

/** A shared budget (Campaign Management `Budget`). */
export interface MicrosoftBudget {
  accountId: string;
  id: string;
  name: string;
  amount: number;
  budgetType: MicrosoftBudgetType;
}

export interface MicrosoftAccounts {
  user: MicrosoftUser;
  customerRoles: MicrosoftCustomerRole[];
  accounts: MicrosoftAccount[];
  /** Campaigns of every ad account (absent: none). */
  campaigns?: MicrosoftCampaign[];
  /** Shared budgets of every ad account (absent: none). */
  budgets?: MicrosoftBudget[];
}

/** One campaign changed by UpdateCampaigns (refused campaigns are not recorded). */
export interface MicrosoftCampaignWrite {
  /** double.now() of the write. */
  at: number;
  accountId: string;
  campaignId: string;
  /** The elements the request set, with the values sent (REST names, e.g. `{ DailyBudget: 75 }`). */
  fields: Record<string, unknown>;
  /** The same elements' values before the write. */
  previous: Record<string, unknown>;
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
  /** Campaigns changed by UpdateCampaigns, oldest first: assert on it that a refused call wrote nothing. */
  campaignWrites: MicrosoftCampaignWrite[];
  /**
   * Minimum DailyBudget per account CurrencyCode (currencies guide, "Minimum Daily Budget"); a currency
   * missing here uses 0.05 [guess]. JPY is not an account currency of Microsoft Advertising.
   */
  minDailyBudgets: Record<string, number>;
  /**
   * Campaign Management calls allowed per CustomerId in a sliding 60 s window (double clock); beyond it
   * they answer 117 CallRateExceeded. null: no limit (the real limits are undocumented).
   */
  campaignCallsPerMinute: number | null;
  /** HTTP status of a 117 CallRateExceeded answer [guess: 400, see callRateExceededFault]. */
  throttleStatus: number;
  /**
   * How Campaign Management answers an access token the double revoked (revokeGrant,
   * faults.invalidateGrants({ accessTokens: true })): 'expired' → 401 with 109 AuthenticationTokenExpired,
   * so the product refreshes once and retries; 'invalid' → 401 with 105 InvalidCredentials [guess: which
   * of the two Microsoft sends for a token invalidated before its expiry is undocumented].
   */
  campaignRevokedToken: 'expired' | 'invalid';
  /**
   * Refresh answers carry no `refresh_token`, and the one presented is neither rotated nor superseded
   * (it stays valid), as an OAuth server may answer (RFC 6749 §6: a new refresh token is optional).
   * Default false: every refresh rotates, as Microsoft's do.
   */
  omitRefreshToken: boolean;
}

export interface MicrosoftDoubleOptions extends CommonDoubleOptions<MicrosoftAccounts> {
  strictRotation?: boolean;
  /** Fixed `expires_in`; default random in 3600–5400. (`accessTokenTtlSeconds` does the same.) */
  expiresIn?: number;
  developerTokens?: string[] | null;
  tenant?: string;
  /** See MicrosoftSettings.campaignCallsPerMinute (default null: no limit). */
  campaignCallsPerMinute?: number | null;
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
  campaigns: [
    // 987 (USD): Search campaigns (one on a shared budget, one paused, one deleted) and the other types.
    campaign('987', '700000001', 'Brand - Exact', 'Search', 'Active', 50),
    campaign('987', '700000002', 'Generic - Broad', 'Search', 'Paused', 25.5),
    { ...campaign('987', '700000003', 'Competitors', 'Search', 'Active', null), budgetId: '800000001' },
    campaign('987', '700000004', 'Shopping - All products', 'Shopping', 'Active', 80),
    {
      ...campaign('987', '700000005', 'Remarketing - Audience', 'Audience', 'BudgetPaused', 15),
      budgetType: 'DailyBudgetAccelerated',
    },
    campaign('987', '700000006', 'Performance Max - Store', 'PerformanceMax', 'Active', 120),
    campaign('987', '700000007', 'Old promo (deleted)', 'Search', 'Deleted', 10),
    // 988 (GBP).
    campaign('988', '700000101', 'UK Brand - Exact', 'Search', 'Active', 40),
    campaign('988', '700000102', 'UK Shopping', 'Shopping', 'Paused', 30),
  ],
  budgets: [
    {
      accountId: '987',
      id: '800000001',
      name: 'Shared search budget',
      amount: 100,
      budgetType: 'DailyBudgetStandard',
    },
  ],
};

function campaign(
  accountId: string,
  id: string,
  name: string,
  campaignType: MicrosoftCampaignType,
  status: MicrosoftCampaignStatus,
  dailyBudget: number | null,
): MicrosoftCampaign {
  return {
    accountId,
    id,
    name,
    status,
    campaignType,
    budgetType: 'DailyBudgetStandard',
    dailyBudget,
    budgetId: null,
  };
}

/**
 * Minimum daily budget per account currency, for the currencies the double's accounts and the tests
 * use: rows of the "Bid and Budget Currencies" table of
 * https://learn.microsoft.com/advertising/guides/currencies, copied here on their own so that a wrong
 * row in credvault's table (its simulated validate-only) is caught, not shared.
 */
export const MICROSOFT_MIN_DAILY_BUDGET: Readonly<Record<string, number>> = {
  CLP: 5.1,
  EUR: 0.05,
  GBP: 0.05,
  USD: 0.05,
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
  options: {
    /** How a revoked access token answers: 'invalid' (105, the default) or 'expired' (109). */
    revoked?: 'expired' | 'invalid';
  } = {},
): MicrosoftApiCall | Reply {
  const { req, double } = ctx;
  const auth = double.authenticate(req);
  if (!auth.ok) {
    if (auth.reason === 'expired' || (auth.reason === 'revoked' && options.revoked === 'expired'))
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

// --- Campaign Management REST -----------------------------------------------------------------------

/** Prefix of every Campaign Management REST path (campaign.api.bingads.microsoft.com). */
export const MICROSOFT_CAMPAIGN_MANAGEMENT_PATH = '/CampaignManagement/v13';

const CALL_RATE_EXCEEDED =
  'You have exceeded the number of calls that you are allowed to make in a minute. Please reduce the number of calls that you make per minute.';

/** An OperationError of a Campaign Management fault. */
export interface MicrosoftOperationError {
  Code: number;
  ErrorCode: string;
  Message: string;
  Details?: string | null;
}

/**
 * A Campaign Management service fault (ApiFaultDetail: TrackingId, Type, BatchErrors, OperationErrors).
 * Account, header and input errors come in OperationErrors, and so does 106 (a Campaign Management
 * UpdateCampaigns refusal in BingAds-PHP-SDK issue #133 carries OperationError 106 UserIsNotAuthorized).
 * HTTP 400 [guess: the REST reference declares ApplicationFault bodies for 400, 401, 403 and 500 without
 * saying which error gets which; BatchErrors [] rather than null is a guess too].
 */
export function apiFaultDetail(status: number, errors: MicrosoftOperationError[]): Reply {
  return json(status, {
    TrackingId: randomUUID(),
    Type: 'ApiFaultDetail',
    BatchErrors: [],
    OperationErrors: errors.map((e) => ({
      Code: e.Code,
      Details: e.Details ?? null,
      ErrorCode: e.ErrorCode,
      Message: e.Message,
    })),
  });
}

function operationFault(code: number, errorCode: string, message: string, details?: string): Reply {
  return apiFaultDetail(400, [
    { Code: code, ErrorCode: errorCode, Message: message, Details: details ?? null },
  ]);
}

/**
 * A body the REST host's JSON deserializer rejects (a string where a double goes, a word outside an enum,
 * a long that is not a number, no JSON object at all): nothing is applied. [guess] the answer's shape:
 * HTTP 400, ApiFaultDetail with OperationError 201 ApiInputValidationError, the JSON path in Details.
 */
function invalidInput(path: string, detail: string): Reply {
  return operationFault(
    201,
    'ApiInputValidationError',
    'One or more input elements failed validation.',
    `${path}: ${detail}`,
  );
}

/**
 * The body of a 117 CallRateExceeded answer: an AdApiFaultDetail like 105 and 109 (Microsoft's SOAP samples
 * handle 117 among the AdApiError codes), with the documented message (services protocol guide,
 * "Handle Throttling"). Clients retry after 60 s. No Retry-After header [guess: none is documented].
 */
export function callRateExceededBody(): Record<string, unknown> {
  return {
    TrackingId: randomUUID(),
    Type: 'AdApiFaultDetail',
    Errors: [
      {
        Code: 117,
        Detail: null,
        ErrorCode: 'CallRateExceeded',
        Message: CALL_RATE_EXCEEDED,
        Type: 'AdApiError',
      },
    ],
  };
}

/**
 * The next `n` Campaign Management calls (any method, any path under /CampaignManagement/) answer 117
 * CallRateExceeded before any other check and change nothing; they are still recorded in
 * `double.requests`. Uses `double.faults` (its `pending` counts them; `faults.reset()` disarms them). The
 * HTTP status is `double.settings.throttleStatus` when armed [guess: 400; set 429 to try the other
 * plausible answer]. For a real sliding window use `settings.campaignCallsPerMinute`.
 */
export function throttleCampaignManagement(double: MicrosoftDouble, n = 1): void {
  double.faults.failNext(n, {
    path: '/CampaignManagement/',
    status: double.settings.throttleStatus,
    body: callRateExceededBody(),
  });
}

/** Sliding 60 s windows of accepted Campaign Management calls, per double and CustomerId. */
const callWindows = new WeakMap<object, Map<string, number[]>>();

/** True when this call goes over settings.campaignCallsPerMinute (refused calls are not counted [guess]). */
function overCallRate(double: MicrosoftDouble, key: string): boolean {
  const limit = double.settings.campaignCallsPerMinute;
  if (limit === null) return false;
  let windows = callWindows.get(double);
  if (!windows) {
    windows = new Map();
    callWindows.set(double, windows);
  }
  const now = double.now();
  const recent = (windows.get(key) ?? []).filter((at) => now - at < 60_000);
  const over = recent.length >= limit;
  if (!over) recent.push(now);
  windows.set(key, recent);
  return over;
}

/**
 * A REST `long`: the reference shows longs as JSON strings ("LongValueHere"); a JSON integer is accepted
 * too [guess]. Returns the id as a string, null when absent or null, false when it is not a long.
 */
function parseLong(value: unknown): string | null | false {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string')
    return /^-?\d{1,19}$/.test(value.trim()) ? String(BigInt(value.trim())) : false;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  return false;
}

const CAMPAIGN_TYPES: readonly MicrosoftCampaignType[] = [
  'Search',
  'Shopping',
  'DynamicSearchAds',
  'Audience',
  'Hotel',
  'PerformanceMax',
];
const CAMPAIGN_STATUSES: readonly MicrosoftCampaignStatus[] = [
  'Active',
  'Paused',
  'BudgetPaused',
  'BudgetAndManualPaused',
  'Deleted',
  'Suspended',
];
/** BudgetLimitType; the double models daily budgets only. */
const BUDGET_LIMIT_TYPES = ['DailyBudgetStandard', 'DailyBudgetAccelerated', 'LifetimeBudgetStandard'];

/**
 * A flags value (CampaignType, ReturnAdditionalFields). SOAP takes a space-delimited list ("Search
 * Shopping"); the REST JSON form of several values is unconfirmed (providers.md §2.C), so a space- or
 * comma-separated string and an array of strings are all accepted [guess]. null: absent or empty.
 */
function parseFlags(value: unknown): string[] | null | false {
  if (value === undefined || value === null) return null;
  let words: string[];
  if (typeof value === 'string') words = value.split(/[\s,]+/);
  else if (Array.isArray(value) && value.every((v) => typeof v === 'string'))
    words = value.flatMap((v: string) => v.split(/[\s,]+/));
  else return false;
  words = words.filter((w) => w !== '');
  return words.length === 0 ? null : words;
}

interface CampaignCall {
  accounts: MicrosoftAccounts;
  body: Record<string, unknown>;
}

/**
 * What every Campaign Management call goes through before its own checks: the token (expired → 401/109;
 * revoked → settings.campaignRevokedToken; otherwise invalid → 401/105), the DeveloperToken (400/105), the
 * call-rate window (117) and a JSON object body.
 */
function checkCampaignCall(ctx: Ctx): CampaignCall | Reply {
  const { req, double } = ctx;
  const call = checkMicrosoftApiCall(ctx, { revoked: double.settings.campaignRevokedToken });
  if ('status' in call) return call;
  if (overCallRate(double, req.headers['customerid'] ?? `user:${call.accounts.user.Id}`))
    return json(double.settings.throttleStatus, callRateExceededBody());
  const body = req.json;
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    return invalidInput('$', 'the request body must be a JSON object (Content-Type: application/json)');
  return { accounts: call.accounts, body: body as Record<string, unknown> };
}

const INVALID_ACCOUNT_ID = 'The account ID is invalid.';
const NOT_AUTHORIZED = 'The user does not represent a authorized developer.';

/**
 * The CustomerAccountId and CustomerId headers and the body's AccountId. CustomerAccountId "must have
 * the same value as the AccountId body element"; both headers are "required for most service operations"
 * (request header reference). Missing CustomerAccountId → 1030 CampaignServiceAccountIdHasToBeSpecified,
 * missing CustomerId → 1029 CampaignServiceCustomerIdHasToBeSpecified (codes documented; that these two
 * operations enforce them is a [guess]). Header ≠ body, no AccountId or an unknown account → 1102
 * CampaignServiceInvalidAccountId [guess: BingAds-Python-SDK issue #207 shows 1102 "The account ID is
 * invalid." from GetCampaignsByAccountId]. An account, or a CustomerId, the user has no role for → 106
 * UserIsNotAuthorized.
 */
function checkAccount(
  ctx: Ctx,
  accounts: MicrosoftAccounts,
  accountId: string | null,
): { account: MicrosoftAccount } | Reply {
  const headerAccount = ctx.req.headers['customeraccountid']?.trim();
  if (!headerAccount)
    return operationFault(
      1030,
      'CampaignServiceAccountIdHasToBeSpecified',
      'The CustomerAccountId element must be specified for this operation.',
    );
  const headerCustomer = ctx.req.headers['customerid']?.trim();
  if (!headerCustomer)
    return operationFault(
      1029,
      'CampaignServiceCustomerIdHasToBeSpecified',
      'The CustomerId element must be specified for this operation.',
    );
  if (accountId === null || parseLong(headerAccount) !== accountId)
    return operationFault(1102, 'CampaignServiceInvalidAccountId', INVALID_ACCOUNT_ID);
  const account = accounts.accounts.find((a) => a.Id === accountId);
  if (!account) return operationFault(1102, 'CampaignServiceInvalidAccountId', INVALID_ACCOUNT_ID);
  if (
    !visibleAccounts(accounts).includes(account) ||
    !accounts.customerRoles.some((r) => r.CustomerId === headerCustomer)
  )
    return operationFault(106, 'UserIsNotAuthorized', NOT_AUTHORIZED);
  return { account };
}

function sharedBudget(accounts: MicrosoftAccounts, c: MicrosoftCampaign): MicrosoftBudget | undefined {
  if (c.budgetId === null) return undefined;
  return accounts.budgets?.find((b) => b.id === c.budgetId && b.accountId === c.accountId);
}

/**
 * A campaign as REST JSON: longs as strings, DailyBudget a number. With a shared budget, DailyBudget and
 * BudgetType are the Budget's ("the amount returned is that of the shared budget").
 */
function campaignJson(accounts: MicrosoftAccounts, c: MicrosoftCampaign): Record<string, unknown> {
  const budget = sharedBudget(accounts, c);
  return {
    BudgetId: c.budgetId,
    BudgetType: budget?.budgetType ?? c.budgetType,
    CampaignType: c.campaignType,
    DailyBudget: budget ? budget.amount : c.dailyBudget,
    Id: c.id,
    Name: c.name,
    Status: c.status,
    SubType: null,
    ...c.extra,
  };
}

/**
 * GetCampaignsByAccountId: `POST /CampaignManagement/v13/Campaigns/QueryByAccountId`, body
 * `{"AccountId":"987","CampaignType":"Search Shopping","ReturnAdditionalFields":"..."}` →
 * `{"Campaigns":[...]}`, every campaign of the requested types at once (no paging). No CampaignType: Search
 * only (documented). Deleted campaigns are never returned. ReturnAdditionalFields is accepted and ignored.
 */
function getCampaignsByAccountId(ctx: Ctx): Reply {
  const call = checkCampaignCall(ctx);
  if ('status' in call) return call;
  const { accounts, body } = call;
  const accountId = parseLong(body['AccountId']);
  if (accountId === false) return invalidInput('$.AccountId', 'not a long');
  const flags = parseFlags(body['CampaignType']);
  if (flags === false) return invalidInput('$.CampaignType', 'not a CampaignType value');
  const unknown = (flags ?? []).find((f) => !CAMPAIGN_TYPES.includes(f as MicrosoftCampaignType));
  if (unknown !== undefined)
    return invalidInput('$.CampaignType', `'${unknown}' is not a CampaignType value`);
  const types = (flags ?? ['Search']) as MicrosoftCampaignType[];
  if (parseFlags(body['ReturnAdditionalFields']) === false)
    return invalidInput('$.ReturnAdditionalFields', 'not a CampaignAdditionalField value');
  const target = checkAccount(ctx, accounts, accountId);
  if (!('account' in target)) return target;
  const { account } = target;
  const campaigns = (accounts.campaigns ?? []).filter(
    (c) => c.accountId === account.Id && c.status !== 'Deleted' && types.includes(c.campaignType),
  );
  return json(200, { Campaigns: campaigns.map((c) => campaignJson(accounts, c)) });
}

interface CampaignUpdate {
  id: string | null;
  /** Every non-null element sent except Id, as sent. */
  fields: Record<string, unknown>;
  dailyBudget?: number;
  name?: string;
  campaignStatus?: MicrosoftCampaignStatus;
  budgetType?: string;
  budgetId?: string;
  campaignType?: MicrosoftCampaignType;
}

/** Deserializes one Campaign of an UpdateCampaigns body, or answers the invalid-input fault. */
function parseCampaignUpdate(
  item: Record<string, unknown>,
  path: string,
): { update: CampaignUpdate } | { fault: Reply } {
  const invalid = (at: string, detail: string) => ({ fault: invalidInput(at, detail) });
  const id = parseLong(item['Id']);
  if (id === false) return invalid(`${path}.Id`, 'not a long');
  const update: CampaignUpdate = { id, fields: {} };
  for (const [key, value] of Object.entries(item)) {
    if (key === 'Id' || value === null || value === undefined) continue;
    const at = `${path}.${key}`;
    switch (key) {
      case 'DailyBudget':
        // A JSON number only: "75.0" in quotes is refused as the deserializer would [guess: the answer].
        if (typeof value !== 'number' || !Number.isFinite(value))
          return invalid(at, `expected a JSON number (double), got ${JSON.stringify(value)}`);
        update.dailyBudget = value;
        break;
      case 'Name':
        if (typeof value !== 'string') return invalid(at, 'expected a string');
        update.name = value;
        break;
      case 'Status':
        if (typeof value !== 'string' || !CAMPAIGN_STATUSES.includes(value as MicrosoftCampaignStatus))
          return invalid(at, `${JSON.stringify(value)} is not a CampaignStatus value`);
        update.campaignStatus = value as MicrosoftCampaignStatus;
        break;
      case 'BudgetType':
        if (typeof value !== 'string' || !BUDGET_LIMIT_TYPES.includes(value))
          return invalid(at, `${JSON.stringify(value)} is not a BudgetLimitType value`);
        update.budgetType = value;
        break;
      case 'CampaignType':
        if (typeof value !== 'string' || !CAMPAIGN_TYPES.includes(value as MicrosoftCampaignType))
          return invalid(at, `${JSON.stringify(value)} is not a CampaignType value`);
        update.campaignType = value as MicrosoftCampaignType;
        break;
      case 'BudgetId': {
        const budgetId = parseLong(value);
        if (budgetId === false || budgetId === null) return invalid(at, 'not a long');
        update.budgetId = budgetId;
        break;
      }
      default:
        break;
    }
    update.fields[key] = value;
  }
  return { update };
}

/** A BatchError of UpdateCampaigns' PartialErrors (REST JSON names). */
function batchError(
  index: number,
  code: number,
  errorCode: string,
  message: string,
): Record<string, unknown> {
  return {
    Code: code,
    Details: null,
    ErrorCode: errorCode,
    FieldPath: null,
    ForwardCompatibilityMap: null,
    Index: index,
    Message: message,
    Type: 'BatchError',
  };
}

type BatchFailure = [code: number, errorCode: string, message: string];

const INVALID_CAMPAIGN_ID: BatchFailure = [
  1100,
  'CampaignServiceInvalidCampaignId',
  'The campaign identifier is not valid.',
];
const CANNOT_UPDATE_SHARED_BUDGET: BatchFailure = [
  1159,
  'CampaignServiceCannotUpdateSharedBudget',
  'You cannot update shared budget through Campaign Entity, please use Budget entity to update shared budget.',
];
const INVALID_DAILY_BUDGET: BatchFailure = [
  1106,
  'CampaignServiceInvalidDailyBudget',
  'The campaign daily budget is not valid.',
];

/** Why one campaign of an UpdateCampaigns request is refused, or null when it can be applied. */
function refuseCampaign(
  double: MicrosoftDouble,
  accounts: MicrosoftAccounts,
  account: MicrosoftAccount,
  current: MicrosoftCampaign,
  u: CampaignUpdate,
): BatchFailure | null {
  if (u.campaignType !== undefined && u.campaignType !== current.campaignType)
    return [
      1155,
      'CampaignServiceCampaignTypeImmutable',
      'The campaign type field of a campaign cannot be updated.',
    ];
  if (u.name !== undefined) {
    const name = u.name.trim();
    if (name === '' || u.name.length > 128)
      return [1101, 'CampaignServiceInvalidCampaignName', 'The campaign name is not valid.'];
    const clash = (accounts.campaigns ?? []).some(
      (c) =>
        c !== current &&
        c.accountId === current.accountId &&
        c.status !== 'Deleted' &&
        c.name.toLowerCase() === name.toLowerCase(),
    );
    // [guess] the code for a name already used in the account on update.
    if (clash)
      return [
        1115,
        'CampaignServiceCannotCreateDuplicateCampaign',
        'An attempt was made to create a duplicate of a campaign that already exists.',
      ];
  }
  // Only Active and Paused may be set (the others are the service's); [guess] the code.
  if (u.campaignStatus !== undefined && u.campaignStatus !== 'Active' && u.campaignStatus !== 'Paused')
    return [
      1120,
      'CampaignServiceInvalidCampaignStatus',
      'The campaign status is not valid for the requested operation.',
    ];
  // BudgetId "0" detaches a shared budget (DailyBudget then required); another id attaches that Budget.
  const detaching = u.budgetId === '0';
  if (u.budgetId !== undefined && !detaching && u.budgetId !== current.budgetId) {
    const budget = accounts.budgets?.find((b) => b.id === u.budgetId && b.accountId === current.accountId);
    // [guess] the code for an unknown Budget id.
    if (!budget) return [517, 'CampaignServiceEntityIdInvalid', 'The entity identifier is invalid.'];
    if (u.dailyBudget !== undefined || u.budgetType !== undefined) return CANNOT_UPDATE_SHARED_BUDGET;
  }
  const sharedAfter = detaching ? null : (u.budgetId ?? current.budgetId);
  if (sharedAfter !== null && (u.dailyBudget !== undefined || u.budgetType !== undefined))
    return CANNOT_UPDATE_SHARED_BUDGET;
  if (detaching && current.budgetId !== null && u.dailyBudget === undefined) return INVALID_DAILY_BUDGET;
  if (u.dailyBudget !== undefined) {
    const minimum = double.settings.minDailyBudgets[account.CurrencyCode] ?? 0.05;
    // [guess] 1106 is also the answer below the currency minimum (the guide gives the minimums only).
    if (u.dailyBudget <= 0 || u.dailyBudget < minimum - 1e-9) return INVALID_DAILY_BUDGET;
  }
  if (u.budgetType !== undefined) {
    // DailyBudgetAccelerated: Audience campaigns only (Campaign.BudgetType); the double has no lifetime
    // budgets. [guess] the answer in both cases.
    if (
      u.budgetType === 'LifetimeBudgetStandard' ||
      (u.budgetType === 'DailyBudgetAccelerated' && current.campaignType !== 'Audience')
    )
      return [
        1121,
        'CampaignServiceInvalidBudgetType',
        'The campaign budget type is missing or is not valid.',
      ];
  }
  return null;
}

/** Applies an accepted update to the stored campaign and records it in settings.campaignWrites. */
function applyCampaign(
  double: MicrosoftDouble,
  accounts: MicrosoftAccounts,
  current: MicrosoftCampaign,
  u: CampaignUpdate,
): void {
  const before = campaignJson(accounts, current);
  const previous: Record<string, unknown> = {};
  for (const key of Object.keys(u.fields)) previous[key] = before[key] ?? null;
  if (u.name !== undefined) current.name = u.name.trim();
  if (u.campaignStatus !== undefined) current.status = u.campaignStatus;
  if (u.budgetId !== undefined) current.budgetId = u.budgetId === '0' ? null : u.budgetId;
  if (u.dailyBudget !== undefined) current.dailyBudget = u.dailyBudget;
  if (u.budgetType !== undefined) current.budgetType = u.budgetType as MicrosoftBudgetType;
  const known = new Set(['Name', 'Status', 'BudgetId', 'DailyBudget', 'BudgetType', 'CampaignType']);
  for (const [key, value] of Object.entries(u.fields))
    if (!known.has(key)) current.extra = { ...current.extra, [key]: value };
  double.settings.campaignWrites.push({
    at: double.now(),
    accountId: current.accountId,
    campaignId: current.id,
    fields: { ...u.fields },
    previous,
  });
}

/**
 * UpdateCampaigns: `PUT /CampaignManagement/v13/Campaigns`, body `{"AccountId":"987","Campaigns":[{"Id":
 * "700000001","DailyBudget":75.0}]}` (1–100 campaigns; only the elements sent change) →
 * `{"PartialErrors":[]}`. Campaigns that fail come back as BatchErrors (Index = position in the request)
 * and the others are applied (partial success, services protocol guide). A body the deserializer rejects
 * (e.g. DailyBudget "75") refuses the whole request and applies nothing.
 */
function updateCampaigns(ctx: Ctx): Reply {
  const call = checkCampaignCall(ctx);
  if ('status' in call) return call;
  const { accounts, body } = call;
  const { double } = ctx;
  const accountId = parseLong(body['AccountId']);
  if (accountId === false) return invalidInput('$.AccountId', 'not a long');
  const list = body['Campaigns'];
  if (list !== undefined && list !== null && !Array.isArray(list))
    return invalidInput('$.Campaigns', 'expected an array of Campaign objects');
  const items: unknown[] = list ?? [];
  const updates: Array<CampaignUpdate | null> = [];
  for (const [index, item] of items.entries()) {
    if (item === null) {
      updates.push(null);
      continue;
    }
    if (typeof item !== 'object' || Array.isArray(item))
      return invalidInput(`$.Campaigns[${index}]`, 'expected a Campaign object');
    const parsed = parseCampaignUpdate(item as Record<string, unknown>, `$.Campaigns[${index}]`);
    if ('fault' in parsed) return parsed.fault;
    updates.push(parsed.update);
  }
  const target = checkAccount(ctx, accounts, accountId);
  if (!('account' in target)) return target;
  const { account } = target;
  if (updates.length === 0)
    return operationFault(
      1113,
      'CampaignServiceCampaignsArrayShouldNotBeNullOrEmpty',
      'The array of campaigns is null or empty.',
    );
  if (updates.length > 100)
    return operationFault(
      1114,
      'CampaignServiceCampaignsArrayExceedsLimit',
      'The list of campaigns exceeds the limit.',
    );
  const partialErrors: Record<string, unknown>[] = [];
  const seen = new Set<string>();
  for (const [index, u] of updates.entries()) {
    let failure: BatchFailure | null = null;
    const current =
      u?.id == null
        ? undefined
        : (accounts.campaigns ?? []).find(
            (c) => c.id === u.id && c.accountId === account.Id && c.status !== 'Deleted',
          );
    if (u === null) failure = [1103, 'CampaignServiceNullCampaign', 'The campaign object is null.'];
    else if (u.id === null) failure = INVALID_CAMPAIGN_ID;
    // [guess] later occurrences of a repeated Id are refused, the first is applied.
    else if (seen.has(u.id))
      failure = [
        1107,
        'CampaignServiceDuplicateCampaignIds',
        'Duplicate identifiers are contained in the array of campaigns.',
      ];
    else if (!current) failure = INVALID_CAMPAIGN_ID;
    else failure = refuseCampaign(double, accounts, account, current, u);
    if (u?.id) seen.add(u.id);
    if (failure) partialErrors.push(batchError(index, ...failure));
    else if (u && current) applyCampaign(double, accounts, current, u);
  }
  return json(200, { PartialErrors: partialErrors });
}

const routes: RouteDef<MicrosoftAccounts, MicrosoftSettings>[] = [
  { method: 'POST', pattern: '/CustomerManagement/v13/User/Query', handler: getUser },
  { method: 'POST', pattern: '/CustomerManagement/v13/Accounts/Search', handler: searchAccounts },
  {
    method: 'POST',
    pattern: `${MICROSOFT_CAMPAIGN_MANAGEMENT_PATH}/Campaigns/QueryByAccountId`,
    handler: getCampaignsByAccountId,
  },
  { method: 'PUT', pattern: `${MICROSOFT_CAMPAIGN_MANAGEMENT_PATH}/Campaigns`, handler: updateCampaigns },
];

export async function startMicrosoftDouble(options: MicrosoftDoubleOptions = {}): Promise<MicrosoftDouble> {
  const settings: MicrosoftSettings = {
    strictRotation: options.strictRotation ?? false,
    fixedExpiresIn: options.expiresIn ?? null,
    refreshTokenTtlSeconds: 90 * 24 * 3600,
    developerTokens: options.developerTokens ?? null,
    tenant: options.tenant ?? 'common',
    campaignWrites: [],
    minDailyBudgets: { ...MICROSOFT_MIN_DAILY_BUDGET },
    campaignCallsPerMinute: options.campaignCallsPerMinute ?? null,
    throttleStatus: 400,
    campaignRevokedToken: 'expired',
    omitRefreshToken: false,
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
      // Read at each refresh: settings.omitRefreshToken answers without one (and rotates nothing).
      get refreshAnswer() {
        return settings.omitRefreshToken ? ('none' as const) : ('rotate' as const);
      },
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
        if (grant.scope.includes('openid')) {
          // The issuer names the account's tenant (here the personal-accounts one).
          const tid = '9188040d-6c67-4c5b-b112-36a304b66dad';
          body['id_token'] = idToken({
            iss: `https://login.microsoftonline.com/${tid}/v2.0`,
            aud: grant.clientId,
            sub: 'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
            tid,
            ver: '2.0',
          });
        }
        return body;
      },
    },
  });
}
