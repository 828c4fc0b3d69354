/**
 * Google double: accounts.google.com / oauth2.googleapis.com (OAuth) and googleads.googleapis.com (Ads
 * API REST) on one port. See shared/providers.md §1.
 */
import {
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
  randomToken,
  redirectUriMatches,
  revokeToken,
  startDouble,
  type TokenErrorKind,
} from './common.js';

export const GOOGLE_ADWORDS_SCOPE = 'https://www.googleapis.com/auth/adwords';
export const GOOGLE_PREFIXES = { access: 'ya29.a0', refresh: '1//0', code: '4/0A' };

export interface GoogleCustomer {
  /** 10 digits, no dashes (int64 as a string, as the REST API sends it). */
  id: string;
  descriptiveName: string;
  currencyCode: string;
  timeZone: string;
  manager: boolean;
  testAccount: boolean;
  status: string;
}

export type GoogleCampaignStatus = 'ENABLED' | 'PAUSED' | 'REMOVED';

/** A campaign (`customers/{customerId}/campaigns/{id}`); ids are int64 as strings. */
export interface GoogleCampaign {
  customerId: string;
  id: string;
  name: string;
  status: GoogleCampaignStatus;
  /** Id of the campaign budget it uses (same customer). */
  budgetId: string;
}

/**
 * A campaign budget (`customers/{customerId}/campaignBudgets/{id}`): an average daily budget, or a
 * campaign total budget (period CUSTOM_PERIOD with total_amount_micros, BudgetPeriodEnum).
 */
export interface GoogleCampaignBudget {
  customerId: string;
  id: string;
  name: string;
  /** Daily amount in micros of the customer's currency (int64 as a string); not sent for a total budget. */
  amountMicros: string;
  /** Default DAILY. */
  period?: 'DAILY' | 'CUSTOM_PERIOD';
  /** The lifetime amount of a CUSTOM_PERIOD budget, in micros. */
  totalAmountMicros?: string;
  /** Shared on purpose (a shared library budget); false: the budget belongs to one campaign. */
  explicitlyShared: boolean;
  /** Output-only status; default 'ENABLED'. A non-shared budget follows its campaign's removal. */
  status?: 'ENABLED' | 'REMOVED';
}

export interface GoogleAccounts {
  customers: GoogleCustomer[];
  /** Manager → client links (the account hierarchy). */
  links: Array<{ managerId: string; clientId: string; hidden?: boolean }>;
  /** Customers the user was granted directly (what listAccessibleCustomers returns). */
  accessible: string[];
  /** Campaigns of every customer (absent: none). `addGoogleCampaign` adds one with its budget. */
  campaigns?: GoogleCampaign[];
  /** Campaign budgets of every customer (absent: none). */
  budgets?: GoogleCampaignBudget[];
}

export interface GaqlContext {
  double: GoogleDouble;
  /** The customer in the URL. */
  customerId: string;
  loginCustomerId: string | null;
  accounts: GoogleAccounts;
  version: string;
}

/** A result row: resource key (lowerCamelCase) → that resource's fields (lowerCamelCase). */
export type GaqlRow = Record<string, Record<string, unknown>>;

export interface GaqlResource {
  /** Selectable fields, GAQL names (`customer.descriptive_name`, `campaign_budget.amount_micros`). */
  fields: string[];
  rows: (ctx: GaqlContext) => GaqlRow[];
}

export interface GoogleSettings {
  /** Lowest live API major version (`v22` and older are sunset by Nov 2026); older answers 404. */
  minVersion: number;
  /**
   * Answer `DEVELOPER_TOKEN_PARAMETER_MISSING` when the header is absent. Default false: since the
   * 2026-09 sunset the header "is optional and ignored" (one user report disagrees; providers.md §1.D).
   */
  requireDeveloperToken: boolean;
  /** Clients the user has consented to before: without prompt=consent they get no new refresh token. */
  consentedClients: Set<string>;
  /** When set, refresh tokens end after this many seconds (Testing-mode apps: 7 days) [unconfirmed]. */
  refreshTokenTtlSeconds: number | null;
  /**
   * A refresh token unused this long dies (providers.md §1: "unused 6 months"); default 180 days,
   * null: never.
   */
  refreshTokenIdleSeconds: number | null;
  /** GAQL resources `googleAds:search` can query; add entries to extend (ad_group, …). */
  gaqlResources: Map<string, GaqlResource>;
  /**
   * Rows per `googleAds:search` page. The API's page size is fixed at 10,000 (PAGE_SIZE_NOT_SUPPORTED says
   * so; providers.md §1.C only says not to send pageSize); lower
   * it to test paging. `searchStream` is never paged.
   */
  searchPageSize: number;
  /** Life of a `nextPageToken`; the paging guide says tokens expire after "about two hours". */
  pageTokenTtlSeconds: number;
  /**
   * A broken server: when set, every `googleAds:search` answers no rows and this same `nextPageToken`
   * (a client that follows it never ends). Default null.
   */
  searchLoopToken: string | null;
  /** Smallest budget step per currency, in micros (currencies not listed: 10,000). */
  currencyMinimumUnitMicros: Record<string, number>;
  /** Budget amounts above this answer MONEY_AMOUNT_TOO_LARGE [guess: the real limit is undocumented]. */
  maxBudgetAmountMicros: bigint;
  /**
   * Accept snake_case paths in `updateMask` (`amount_micros`) as well as the proto3 JSON form
   * (`amountMicros`). [guess] Google's JSON front end converts paths to snake_case and so tends to take
   * both; providers.md §1.C marks this unconfirmed. false: snake_case paths answer FIELD_NOT_FOUND.
   */
  acceptSnakeCaseUpdateMask: boolean;
  /** Budget updates applied by `campaignBudgets:mutate` (validate-only requests never appear). */
  budgetWrites: GoogleBudgetWrite[];
  /** Armed quota errors (see `exhaustGoogleAdsQuota`); each Ads API call takes one while any remain. */
  quotaFaults: Array<GoogleQuotaFault & { remaining: number }>;
}

/** One budget update that `campaignBudgets:mutate` applied. */
export interface GoogleBudgetWrite {
  /** The double's clock (`double.now()`) when it was applied. */
  at: number;
  customerId: string;
  budgetId: string;
  resourceName: string;
  previousAmountMicros: string;
  amountMicros: string;
}

/** What a quota error looks like (defaults: the daily-operations error a Basic-access project gets). */
export interface GoogleQuotaFault {
  /** QuotaError enum value; default 'RESOURCE_EXHAUSTED' (daily operations). */
  quotaError?: 'RESOURCE_EXHAUSTED' | 'RESOURCE_TEMPORARILY_EXHAUSTED';
  /** QuotaErrorDetails.retryDelay in seconds (also in the message); null: no details. Default 30. */
  retryDelaySeconds?: number | null;
  /** QuotaRateScope; default 'DEVELOPER' ('ACCOUNT' for RESOURCE_TEMPORARILY_EXHAUSTED). */
  rateScope?: 'ACCOUNT' | 'DEVELOPER';
  rateName?: string;
  /** Extra response headers (Google sends no Retry-After on these as far as known). */
  headers?: Record<string, string>;
  /** Only calls on this customer (the URL's) take it; listAccessibleCustomers never does. */
  customerId?: string;
}

export interface GoogleDoubleOptions extends CommonDoubleOptions<GoogleAccounts> {
  minVersion?: number;
  requireDeveloperToken?: boolean;
  refreshTokenTtlSeconds?: number | null;
  /** See `GoogleSettings.searchPageSize` (default 10,000). */
  searchPageSize?: number;
}

export type GoogleDouble = Double<GoogleAccounts, GoogleSettings>;

export const GOOGLE_DEFAULT_CLIENT = {
  clientId: '123456789012-double.apps.googleusercontent.com',
  clientSecret: 'GOCSPX-double-secret',
  // Desktop-app client: any port on loopback.
  redirectUris: ['http://127.0.0.1', 'http://localhost'],
};

export const GOOGLE_DEFAULT_ACCOUNTS: GoogleAccounts = {
  customers: [
    {
      id: '1112223334',
      descriptiveName: 'Acme Manager',
      currencyCode: 'USD',
      timeZone: 'America/New_York',
      manager: true,
      testAccount: false,
      status: 'ENABLED',
    },
    {
      id: '1234567890',
      descriptiveName: 'Acme US',
      currencyCode: 'USD',
      timeZone: 'America/New_York',
      manager: false,
      testAccount: false,
      status: 'ENABLED',
    },
    {
      id: '2345678901',
      descriptiveName: 'Acme JP',
      currencyCode: 'JPY',
      timeZone: 'Asia/Tokyo',
      manager: false,
      testAccount: false,
      status: 'ENABLED',
    },
  ],
  links: [
    { managerId: '1112223334', clientId: '1234567890' },
    { managerId: '1112223334', clientId: '2345678901' },
  ],
  accessible: ['1112223334', '1234567890'],
  // Acme US: five campaigns, two of them on one explicitly shared budget, one removed (its own budget
  // removed with it, as a non-shared budget follows its campaign). Acme JP: two campaigns in JPY.
  campaigns: [
    {
      customerId: '1234567890',
      id: '21000000001',
      name: 'Brand Search',
      status: 'ENABLED',
      budgetId: '13000000001',
    },
    {
      customerId: '1234567890',
      id: '21000000002',
      name: 'Generic Search',
      status: 'ENABLED',
      budgetId: '13000000002',
    },
    {
      customerId: '1234567890',
      id: '21000000003',
      name: 'Display Prospecting',
      status: 'PAUSED',
      budgetId: '13000000002',
    },
    {
      customerId: '1234567890',
      id: '21000000004',
      name: 'Summer Sale 2025',
      status: 'REMOVED',
      budgetId: '13000000003',
    },
    {
      customerId: '1234567890',
      id: '21000000005',
      name: 'Performance Max',
      status: 'ENABLED',
      budgetId: '13000000004',
    },
    {
      customerId: '2345678901',
      id: '21000000011',
      name: 'ブランド検索',
      status: 'ENABLED',
      budgetId: '13000000011',
    },
    {
      customerId: '2345678901',
      id: '21000000012',
      name: 'JP Display',
      status: 'PAUSED',
      budgetId: '13000000012',
    },
  ],
  budgets: [
    {
      customerId: '1234567890',
      id: '13000000001',
      name: 'Brand Search',
      amountMicros: '50000000',
      explicitlyShared: false,
    },
    {
      customerId: '1234567890',
      id: '13000000002',
      name: 'Shared Prospecting',
      amountMicros: '120000000',
      explicitlyShared: true,
    },
    {
      customerId: '1234567890',
      id: '13000000003',
      name: 'Summer Sale 2025',
      amountMicros: '25000000',
      explicitlyShared: false,
      status: 'REMOVED',
    },
    {
      customerId: '1234567890',
      id: '13000000004',
      name: 'Performance Max',
      amountMicros: '80000000',
      explicitlyShared: false,
    },
    {
      customerId: '2345678901',
      id: '13000000011',
      name: 'ブランド検索',
      amountMicros: '5000000000',
      explicitlyShared: false,
    },
    {
      customerId: '2345678901',
      id: '13000000012',
      name: 'JP Display',
      amountMicros: '3000000000',
      explicitlyShared: false,
    },
  ],
};

/**
 * Smallest budget step per currency, in micros (USD: one cent; JPY: one yen). Currencies not listed
 * use 10,000 (one hundredth) [guess: Google's per-currency table is not in providers.md].
 */
export const GOOGLE_CURRENCY_MINIMUM_UNIT_MICROS: Record<string, number> = {
  USD: 10_000,
  EUR: 10_000,
  GBP: 10_000,
  JPY: 1_000_000,
};

/**
 * Adds a campaign to `accounts` (ids: the next free ones). Without `budgetId` it gets its own
 * non-shared budget named after it (`amountMicros`, default 10,000,000); with one, it shares that budget.
 */
export function addGoogleCampaign(
  accounts: GoogleAccounts,
  input: {
    customerId: string;
    name: string;
    status?: GoogleCampaignStatus;
    budgetId?: string;
    amountMicros?: string;
  },
): GoogleCampaign {
  accounts.campaigns ??= [];
  accounts.budgets ??= [];
  const nextId = (ids: string[], floor: bigint) =>
    String(ids.reduce((max, id) => (BigInt(id) > max ? BigInt(id) : max), floor) + 1n);
  let budgetId = input.budgetId;
  if (budgetId === undefined) {
    budgetId = nextId(
      accounts.budgets.map((b) => b.id),
      13_000_000_000n,
    );
    accounts.budgets.push({
      customerId: input.customerId,
      id: budgetId,
      name: input.name,
      amountMicros: input.amountMicros ?? '10000000',
      explicitlyShared: false,
      status: input.status === 'REMOVED' ? 'REMOVED' : 'ENABLED',
    });
  } else {
    const budget = accounts.budgets.find((b) => b.id === budgetId && b.customerId === input.customerId);
    if (!budget) throw new Error(`addGoogleCampaign: no budget ${budgetId} on customer ${input.customerId}`);
    // CampaignBudget.explicitly_shared: a budget made for one campaign cannot be given to a second one
    // ("Attempting to share the budget with a second campaign will result in an error").
    const users = (accounts.campaigns ?? []).filter(
      (c) => c.customerId === input.customerId && c.budgetId === budgetId && c.status !== 'REMOVED',
    );
    if (!budget.explicitlyShared && users.length > 0)
      throw new Error(`addGoogleCampaign: budget ${budgetId} is not explicitly shared and already in use`);
  }
  const campaign: GoogleCampaign = {
    customerId: input.customerId,
    id: nextId(
      accounts.campaigns.map((c) => c.id),
      21_000_000_000n,
    ),
    name: input.name,
    status: input.status ?? 'ENABLED',
    budgetId,
  };
  accounts.campaigns.push(campaign);
  return campaign;
}

// --- OAuth errors ----------------------------------------------------------------------------------

function oauthError(status: number, error: string, description: string): Reply {
  return json(status, { error, error_description: description });
}

function tokenError(kind: TokenErrorKind, detail: string): Reply {
  switch (kind) {
    case 'missing_parameter':
      return oauthError(400, 'invalid_request', `Missing required parameter: ${detail}`);
    case 'unsupported_grant_type':
      return oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${detail}`);
    case 'code_redirect_mismatch':
      return oauthError(400, 'redirect_uri_mismatch', 'Bad Request');
    case 'pkce_missing':
      return oauthError(400, 'invalid_grant', 'Missing code verifier.');
    case 'pkce_mismatch':
      return oauthError(400, 'invalid_grant', 'Invalid code verifier.');
    case 'refresh_dead':
    case 'refresh_expired':
    case 'refresh_reused':
      return oauthError(400, 'invalid_grant', 'Token has been expired or revoked.');
    case 'refresh_client_mismatch':
      return oauthError(400, 'unauthorized_client', 'Unauthorized');
    default:
      // Unknown, reused, expired or foreign codes all come back as a bare "Bad Request".
      return oauthError(400, 'invalid_grant', 'Bad Request');
  }
}

/** client_secret_post or client_secret_basic (not both); public clients may omit the secret. */
function authenticateClient(req: RecordedRequest, double: GoogleDouble): ClientAuth {
  const form = req.form ?? new URLSearchParams();
  const postId = form.get('client_id');
  const postSecret = form.get('client_secret');
  if (req.basic && postSecret !== null)
    // [guess] RFC 6749 §2.3: a client must not use more than one authentication method.
    return { reply: oauthError(400, 'invalid_request', 'Multiple client authentication methods used.') };
  const clientId = req.basic?.user ?? postId;
  if (!clientId)
    return { reply: oauthError(400, 'invalid_request', 'Could not determine client ID from request.') };
  const client = double.clients.get(clientId) ?? double.clients.get(safeFormDecode(clientId));
  if (!client) return { reply: oauthError(401, 'invalid_client', 'The OAuth client was not found.') };
  const secret = req.basic ? req.basic.pass : postSecret;
  if (client.public && (secret === null || secret === '')) return { client };
  if (secret === null || secret === '')
    return { reply: oauthError(400, 'invalid_request', 'client_secret is missing.') };
  if (!credentialEquals(secret, client.clientSecret))
    return { reply: oauthError(401, 'invalid_client', 'Unauthorized') };
  return { client };
}

function safeFormDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

function authorizeError(kind: string, detail: string): Reply {
  const error =
    kind === 'redirect_uri_mismatch' || kind === 'unsupported_response_type'
      ? kind
      : kind === 'unknown_client'
        ? 'invalid_client'
        : 'invalid_request';
  const body = `<!doctype html><html><head><title>Error 400: ${error}</title></head><body>
<h1>Access blocked: this app's request is invalid</h1>
<p>Error 400: ${escapeHtml(error)}</p><p>${escapeHtml(detail)}</p></body></html>`;
  return html(400, body);
}

// --- Ads API helpers -------------------------------------------------------------------------------

function statusName(status: number): string {
  if (status === 400) return 'INVALID_ARGUMENT';
  if (status === 401) return 'UNAUTHENTICATED';
  if (status === 403) return 'PERMISSION_DENIED';
  if (status === 404) return 'NOT_FOUND';
  if (status === 429) return 'RESOURCE_EXHAUSTED';
  return 'INTERNAL';
}

/** One GoogleAdsError of a GoogleAdsFailure (proto3 JSON). */
export interface GoogleAdsError {
  /** One-key oneof: `{ campaignBudgetError: 'NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT' }`. */
  errorCode: Record<string, string>;
  message: string;
  /** The offending value, e.g. `{ int64Value: '75000001' }`. */
  trigger?: Record<string, string>;
  /** Where in the request: `operations[0].update.amount_micros` as field path elements. */
  location?: { fieldPathElements: Array<{ fieldName: string; index?: number }> };
  /** Extra details, e.g. `{ quotaErrorDetails: { rateScope, rateName, retryDelay } }`. */
  details?: Record<string, unknown>;
}

function failureDetail(version: string, errors: GoogleAdsError[]): Record<string, unknown> {
  return {
    '@type': `type.googleapis.com/google.ads.googleads.${version}.errors.GoogleAdsFailure`,
    errors,
    requestId: randomToken(16),
  };
}

/** A Google Ads API error: the google.rpc.Status JSON with a GoogleAdsFailure detail. */
export function googleAdsFailure(
  status: number,
  version: string,
  errors: GoogleAdsError[],
  headers: Record<string, string> = {},
): Reply {
  const message =
    status === 400
      ? 'Request contains an invalid argument.'
      : status === 403
        ? 'The caller does not have permission'
        : status === 401
          ? 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.'
          : status === 429
            ? 'Resource has been exhausted (e.g. check quota).'
            : 'Internal error encountered.';
  return json(
    status,
    {
      error: {
        code: status,
        message,
        status: statusName(status),
        details: [failureDetail(version, errors)],
      },
    },
    headers,
  );
}

/**
 * The 429 a quota error answers. Shape from a real v21 answer (PipedreamHQ/pipedream#21554): status
 * RESOURCE_EXHAUSTED, `quotaError` in the GoogleAdsFailure, `details.quotaErrorDetails` with
 * rateScope, rateName and retryDelay (a Duration string such as "30s").
 */
export function googleQuotaFailure(version: string, fault: GoogleQuotaFault = {}): Reply {
  const quotaError = fault.quotaError ?? 'RESOURCE_EXHAUSTED';
  const temporary = quotaError === 'RESOURCE_TEMPORARILY_EXHAUSTED';
  const delay = fault.retryDelaySeconds === undefined ? 30 : fault.retryDelaySeconds;
  // [guess] the wording of the short-term variant and its default scope/name.
  const base = temporary ? 'Too many requests in a short amount of time.' : 'Too many requests.';
  const error: GoogleAdsError = {
    errorCode: { quotaError },
    message: delay === null ? base : `${base} Retry in ${delay} seconds.`,
  };
  if (delay !== null)
    error.details = {
      quotaErrorDetails: {
        rateScope: fault.rateScope ?? (temporary ? 'ACCOUNT' : 'DEVELOPER'),
        rateName:
          fault.rateName ?? (temporary ? 'Requests per account' : 'Number of operations for basic access'),
        retryDelay: `${delay}s`,
      },
    };
  return googleAdsFailure(429, version, [error], fault.headers);
}

/**
 * The next `n` Ads API calls (listAccessibleCustomers, search, searchStream, campaignBudgets:mutate)
 * that pass authentication answer a quota error instead of being processed. [guess] Google checks the
 * token and the customer before the quota, so a dead token still answers 401 first.
 */
export function exhaustGoogleAdsQuota(double: GoogleDouble, n: number, fault: GoogleQuotaFault = {}): void {
  double.settings.quotaFaults.push({ ...fault, remaining: n });
}

function takeQuotaFault(double: GoogleDouble, version: string, customerId?: string): Reply | undefined {
  const armed = double.settings.quotaFaults.find(
    (f) => f.remaining > 0 && (f.customerId === undefined || f.customerId === customerId),
  );
  if (!armed) return undefined;
  armed.remaining -= 1;
  return googleQuotaFailure(version, armed);
}

/**
 * A request body the JSON front end cannot map onto the request message: plain google.rpc.Status with
 * a BadRequest detail and no GoogleAdsFailure. [guess] exact wording, modelled on Google's JSON errors.
 */
function invalidPayload(field: string, description: string): Reply {
  return json(400, {
    error: {
      code: 400,
      message: `Invalid JSON payload received. ${description}`,
      status: 'INVALID_ARGUMENT',
      details: [
        {
          '@type': 'type.googleapis.com/google.rpc.BadRequest',
          fieldViolations: [{ field, description: `Invalid JSON payload received. ${description}` }],
        },
      ],
    },
  });
}

/**
 * The body of Google's 401 for a missing, expired or revoked access token (plain google.rpc.Status).
 * Exported so a test can inject the same answer with `double.faults.failNext(…)`.
 */
export function googleUnauthenticatedBody(
  reason: 'missing' | 'invalid' = 'invalid',
): Record<string, unknown> {
  const message =
    reason === 'missing'
      ? 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.'
      : 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';
  return { error: { code: 401, message, status: 'UNAUTHENTICATED' } };
}

function unauthenticated(reason: string): Reply {
  return json(401, googleUnauthenticatedBody(reason === 'missing' ? 'missing' : 'invalid'), {
    'www-authenticate': 'Bearer',
  });
}

function descendants(accounts: GoogleAccounts, rootId: string): Array<{ id: string; level: number }> {
  const out: Array<{ id: string; level: number }> = [];
  const seen = new Set<string>([rootId]);
  let frontier = [rootId];
  for (let level = 1; frontier.length > 0; level++) {
    const next: string[] = [];
    for (const managerId of frontier) {
      for (const link of accounts.links) {
        if (link.managerId !== managerId || seen.has(link.clientId)) continue;
        seen.add(link.clientId);
        out.push({ id: link.clientId, level });
        next.push(link.clientId);
      }
    }
    frontier = next;
  }
  return out;
}

function canReach(accounts: GoogleAccounts, from: string, to: string): boolean {
  return from === to || descendants(accounts, from).some((d) => d.id === to);
}

export interface GoogleAdsCall {
  version: string;
  customerId: string;
  loginCustomerId: string | null;
  accounts: GoogleAccounts;
}

/**
 * Checks what every customer-scoped Ads API call needs: a live version, a Bearer token with the adwords
 * scope, a well-formed login-customer-id when present, and access to the customer (directly, or through
 * the manager named in login-customer-id). Returns the call or the error to answer.
 */
export function checkGoogleAdsCall(ctx: RouteContext<GoogleAccounts, GoogleSettings>): GoogleAdsCall | Reply {
  const { req, params, double } = ctx;
  const version = params['version'] ?? '';
  const versionError = checkVersion(double, version);
  if (versionError) return versionError;
  const auth = double.authenticate(req);
  if (!auth.ok) return unauthenticated(auth.reason);
  if (!auth.access.scope.includes(GOOGLE_ADWORDS_SCOPE))
    return json(403, {
      error: {
        code: 403,
        message: 'Request had insufficient authentication scopes.',
        status: 'PERMISSION_DENIED',
      },
    });
  const developerToken = req.headers['developer-token'];
  if (double.settings.requireDeveloperToken && !developerToken)
    return googleAdsFailure(401, version, [
      {
        errorCode: { authenticationError: 'DEVELOPER_TOKEN_PARAMETER_MISSING' },
        message: 'developer-token parameter is missing.',
      },
    ]);
  const customerId = params['cid'] ?? '';
  const loginHeader = req.headers['login-customer-id'];
  const loginCustomerId = loginHeader === undefined ? null : loginHeader;
  if (loginCustomerId !== null && !/^\d{10}$/.test(loginCustomerId))
    return googleAdsFailure(400, version, [
      {
        errorCode: { requestError: 'INVALID_CUSTOMER_ID' },
        message: 'Invalid customer ID (login-customer-id).',
      },
    ]);
  if (!/^\d{10}$/.test(customerId))
    return googleAdsFailure(400, version, [
      { errorCode: { requestError: 'INVALID_CUSTOMER_ID' }, message: `Invalid customer ID '${customerId}'.` },
    ]);
  const { accounts } = auth;
  const known = (id: string) => accounts.customers.some((c) => c.id === id);
  const direct = (id: string) => accounts.accessible.includes(id);
  const loginAllowed =
    loginCustomerId === null ||
    (known(loginCustomerId) && accounts.accessible.some((a) => canReach(accounts, a, loginCustomerId)));
  const allowed =
    loginAllowed &&
    known(customerId) &&
    (loginCustomerId === null ? direct(customerId) : canReach(accounts, loginCustomerId, customerId));
  if (!allowed)
    return googleAdsFailure(403, version, [
      {
        errorCode: { authorizationError: 'USER_PERMISSION_DENIED' },
        message:
          "User doesn't have permission to access customer. Note: If you're accessing a client customer, the manager's customer id must be set in the 'login-customer-id' header. See https://developers.google.com/google-ads/api/docs/concepts/call-structure#cid",
      },
    ]);
  // A cancelled, suspended or closed account answers nothing but this (AuthorizationErrorEnum).
  if (accounts.customers.find((c) => c.id === customerId)?.status !== 'ENABLED')
    return googleAdsFailure(403, version, [
      {
        errorCode: { authorizationError: 'CUSTOMER_NOT_ENABLED' },
        message:
          "The customer account can't be accessed because it is not yet enabled or has been deactivated.",
      },
    ]);
  return { version, customerId, loginCustomerId, accounts };
}

function checkVersion(double: GoogleDouble, version: string): Reply | undefined {
  const match = /^v(\d+)$/.exec(version);
  if (!match || Number(match[1]) < double.settings.minVersion)
    // [guess] a sunset version answers 404 (the method no longer exists on that path).
    return json(404, {
      error: {
        code: 404,
        message: `Method not found: API version ${version} is not available.`,
        status: 'NOT_FOUND',
      },
    });
  return undefined;
}

// --- GAQL -------------------------------------------------------------------------------------------

export function camel(snake: string): string {
  return snake.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

interface Condition {
  field: string;
  op: string;
  value: unknown;
}

interface ParsedQuery {
  fields: string[];
  resource: string;
  where: Condition[];
  orderBy: Array<{ field: string; desc: boolean }>;
  limit: number | null;
}

export class GaqlError extends Error {
  constructor(
    readonly errorCode: Record<string, string>,
    message: string,
  ) {
    super(message);
  }
}

function parseLiteral(raw: string): unknown {
  const text = raw.trim();
  const quoted = /^'(.*)'$|^"(.*)"$/s.exec(text);
  if (quoted) return quoted[1] ?? quoted[2] ?? '';
  if (/^-?\d+(\.\d+)?$/.test(text)) return text;
  if (/^(true|false)$/i.test(text)) return text.toLowerCase() === 'true';
  if (/^\(.*\)$/s.test(text))
    return text
      .slice(1, -1)
      .split(',')
      .map((v) => parseLiteral(v));
  if (/^[A-Z_]+$/.test(text)) return text;
  throw new GaqlError({ queryError: 'INVALID_VALUE_WITH_OPERATOR' }, `Cannot parse value ${text}`);
}

/** A small GAQL parser: SELECT … FROM … [WHERE a AND b] [ORDER BY …] [LIMIT n] [PARAMETERS …]. */
export function parseGaql(query: string): ParsedQuery {
  const match =
    /^\s*SELECT\s+(.+?)\s+FROM\s+([a-z_]+)(?:\s+WHERE\s+(.+?))?(?:\s+ORDER\s+BY\s+(.+?))?(?:\s+LIMIT\s+(\d+))?(?:\s+PARAMETERS\s+.+?)?\s*$/is.exec(
      query,
    );
  if (!match?.[1] || !match[2])
    throw new GaqlError(
      { queryError: 'UNEXPECTED_END_OF_QUERY' },
      'Error in query: unexpected end of query.',
    );
  const fields = match[1].split(',').map((f) => f.trim());
  const where: Condition[] = [];
  if (match[3]) {
    for (const part of match[3].split(/\s+AND\s+/i)) {
      const cond =
        /^([a-z_.]+)\s*(=|!=|<=|>=|<|>|NOT IN|IN|LIKE|NOT LIKE|IS NULL|IS NOT NULL)\s*(.*)$/is.exec(
          part.trim(),
        );
      if (!cond?.[1] || !cond[2])
        throw new GaqlError(
          { queryError: 'UNEXPECTED_INPUT' },
          `Error in query: cannot parse condition ${part}`,
        );
      const op = cond[2].toUpperCase().replace(/\s+/g, ' ');
      where.push({ field: cond[1], op, value: op.startsWith('IS ') ? null : parseLiteral(cond[3] ?? '') });
    }
  }
  const orderBy = (match[4] ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '')
    .map((o) => {
      const [field = '', dir = 'ASC'] = o.split(/\s+/);
      return { field, desc: dir.toUpperCase() === 'DESC' };
    });
  return {
    fields,
    resource: match[2].toLowerCase(),
    where,
    orderBy,
    limit: match[5] ? Number(match[5]) : null,
  };
}

const fieldPaths = new Map<string, { resource: string; path: string[] }>();

/** `campaign_budget.amount_micros` → resource key `campaignBudget`, path `['amountMicros']` (memoised). */
function fieldPath(field: string): { resource: string; path: string[] } {
  let parsed = fieldPaths.get(field);
  if (!parsed) {
    const dot = field.indexOf('.');
    parsed = {
      resource: camel(field.slice(0, dot)),
      path: field
        .slice(dot + 1)
        .split('.')
        .map((p) => camel(p)),
    };
    fieldPaths.set(field, parsed);
  }
  return parsed;
}

function getField(row: GaqlRow, field: string): unknown {
  const { resource, path } = fieldPath(field);
  let value: unknown = row[resource];
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function setField(out: GaqlRow, field: string, value: unknown): void {
  const { resource, path } = fieldPath(field);
  let target: Record<string, unknown> = out[resource] ?? {};
  out[resource] = target;
  path.forEach((key, i) => {
    if (i === path.length - 1) target[key] = value;
    else {
      const next = (target[key] as Record<string, unknown> | undefined) ?? {};
      target[key] = next;
      target = next;
    }
  });
}

function compare(a: unknown, b: unknown): number {
  const na = Number(a);
  const nb = Number(b);
  if (typeof a !== 'boolean' && typeof b !== 'boolean' && !Number.isNaN(na) && !Number.isNaN(nb))
    return na - nb;
  return String(a).localeCompare(String(b));
}

function satisfies(value: unknown, cond: Condition): boolean {
  const v = cond.value;
  switch (cond.op) {
    case '=':
      return compare(value, v) === 0;
    case '!=':
      return compare(value, v) !== 0;
    case '<':
      return compare(value, v) < 0;
    case '<=':
      return compare(value, v) <= 0;
    case '>':
      return compare(value, v) > 0;
    case '>=':
      return compare(value, v) >= 0;
    case 'IN':
      return Array.isArray(v) && v.some((x) => compare(value, x) === 0);
    case 'NOT IN':
      return Array.isArray(v) && !v.some((x) => compare(value, x) === 0);
    case 'LIKE':
    case 'NOT LIKE': {
      const pattern = new RegExp(
        `^${String(v)
          .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
          .replace(/%/g, '.*')
          .replace(/_/g, '.')}$`,
        'i',
      );
      return pattern.test(String(value)) === (cond.op === 'LIKE');
    }
    case 'IS NULL':
      return value === undefined || value === null;
    case 'IS NOT NULL':
      return value !== undefined && value !== null;
    default:
      return false;
  }
}

/** Runs a GAQL query against the double's resources: every result row and the response fieldMask. */
export function queryGaql(query: string, ctx: GaqlContext): { results: GaqlRow[]; fieldMask: string } {
  const parsed = parseGaql(query);
  const resource = ctx.double.settings.gaqlResources.get(parsed.resource);
  if (!resource)
    throw new GaqlError(
      { queryError: 'INVALID_RESOURCE_NAME_IN_FROM_CLAUSE' },
      `Error in query: unrecognized resource name ${parsed.resource}.`,
    );
  const selectable = new Set(resource.fields);
  for (const field of [...parsed.fields, ...parsed.where.map((w) => w.field)]) {
    if (!selectable.has(field))
      throw new GaqlError(
        { queryError: 'UNRECOGNIZED_FIELD' },
        `Error in query: unrecognized field '${field}'.`,
      );
  }
  let rows = resource
    .rows(ctx)
    .filter((row) => parsed.where.every((c) => satisfies(getField(row, c.field), c)));
  for (const order of [...parsed.orderBy].reverse()) {
    rows = [...rows].sort((a, b) => {
      const diff = compare(getField(a, order.field), getField(b, order.field));
      return order.desc ? -diff : diff;
    });
  }
  if (parsed.limit !== null) rows = rows.slice(0, parsed.limit);
  const results = rows.map((row) => {
    const out: GaqlRow = {};
    // The API returns each selected resource's resourceName even when not selected.
    for (const field of parsed.fields) {
      const resourceKey = field.slice(0, field.indexOf('.'));
      const name = getField(row, `${resourceKey}.resource_name`);
      if (name !== undefined) setField(out, `${resourceKey}.resource_name`, name);
    }
    for (const field of parsed.fields) {
      const value = getField(row, field);
      if (value !== undefined) setField(out, field, value);
    }
    return out;
  });
  const fieldMask = parsed.fields
    .map((f) =>
      f
        .split('.')
        .map((p) => camel(p))
        .join('.'),
    )
    .join(',');
  return { results, fieldMask };
}

/** Runs a GAQL query against the double's resources; returns the REST search answer body (unpaged). */
export function runGaql(query: string, ctx: GaqlContext): Record<string, unknown> {
  const { results, fieldMask } = queryGaql(query, ctx);
  // proto3 JSON omits an empty repeated field: no rows → no "results" key at all.
  return results.length > 0 ? { results, fieldMask } : { fieldMask };
}

function customerRow(c: GoogleCustomer): GaqlRow {
  return {
    customer: {
      resourceName: `customers/${c.id}`,
      id: c.id,
      descriptiveName: c.descriptiveName,
      currencyCode: c.currencyCode,
      timeZone: c.timeZone,
      manager: c.manager,
      testAccount: c.testAccount,
      status: c.status,
    },
  };
}

const CUSTOMER_FIELDS = [
  'resource_name',
  'id',
  'descriptive_name',
  'currency_code',
  'time_zone',
  'manager',
  'test_account',
  'status',
];

const CAMPAIGN_FIELDS = ['resource_name', 'id', 'name', 'status', 'campaign_budget'];

const CAMPAIGN_BUDGET_FIELDS = [
  'resource_name',
  'id',
  'name',
  'amount_micros',
  'total_amount_micros',
  'period',
  'explicitly_shared',
  'reference_count',
  'status',
];

function budgetResourceName(b: { customerId: string; id: string }): string {
  return `customers/${b.customerId}/campaignBudgets/${b.id}`;
}

/**
 * Campaigns that are not removed and use each budget (CampaignBudget.reference_count), by resource name.
 * Counted once per query: an account can have tens of thousands of campaigns.
 */
function referenceCounts(accounts: GoogleAccounts): Map<string, number> {
  const counts = new Map<string, number>();
  for (const c of accounts.campaigns ?? []) {
    if (c.status === 'REMOVED') continue;
    const name = budgetResourceName({ customerId: c.customerId, id: c.budgetId });
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

function referenceCount(accounts: GoogleAccounts, budget: GoogleCampaignBudget): number {
  return referenceCounts(accounts).get(budgetResourceName(budget)) ?? 0;
}

/** The CampaignBudget message as the REST API sends it (int64 as strings; optional fields present). */
function budgetJson(
  accounts: GoogleAccounts,
  b: GoogleCampaignBudget,
  counts?: Map<string, number>,
): Record<string, unknown> {
  return {
    resourceName: budgetResourceName(b),
    id: b.id,
    name: b.name,
    // proto3 JSON leaves an unset optional field out: a total budget has no daily amount.
    ...(b.period === 'CUSTOM_PERIOD'
      ? { totalAmountMicros: b.totalAmountMicros }
      : { amountMicros: b.amountMicros }),
    period: b.period ?? 'DAILY',
    explicitlyShared: b.explicitlyShared,
    referenceCount: String(counts ? (counts.get(budgetResourceName(b)) ?? 0) : referenceCount(accounts, b)),
    status: b.status ?? 'ENABLED',
  };
}

function customerFor(ctx: GaqlContext): GaqlRow {
  const customer = ctx.accounts.customers.find((c) => c.id === ctx.customerId);
  return customer ? customerRow(customer) : {};
}

function defaultGaqlResources(): Map<string, GaqlResource> {
  return new Map<string, GaqlResource>([
    [
      // FROM campaign implicitly joins the campaign's budget and the customer, as the API does.
      'campaign',
      {
        fields: [
          ...CAMPAIGN_FIELDS.map((f) => `campaign.${f}`),
          ...CAMPAIGN_BUDGET_FIELDS.map((f) => `campaign_budget.${f}`),
          ...CUSTOMER_FIELDS.map((f) => `customer.${f}`),
        ],
        rows: (ctx) => {
          const counts = referenceCounts(ctx.accounts);
          const budgets = new Map(
            (ctx.accounts.budgets ?? [])
              .filter((b) => b.customerId === ctx.customerId)
              .map((b) => [b.id, b] as const),
          );
          const customer = customerFor(ctx);
          return (ctx.accounts.campaigns ?? [])
            .filter((c) => c.customerId === ctx.customerId)
            .map((c) => {
              const budget = budgets.get(c.budgetId);
              const row: GaqlRow = {
                ...customer,
                campaign: {
                  resourceName: `customers/${c.customerId}/campaigns/${c.id}`,
                  id: c.id,
                  name: c.name,
                  status: c.status,
                  campaignBudget: budgetResourceName({ customerId: c.customerId, id: c.budgetId }),
                },
              };
              if (budget) row['campaignBudget'] = budgetJson(ctx.accounts, budget, counts);
              return row;
            });
        },
      },
    ],
    [
      'campaign_budget',
      {
        fields: [
          ...CAMPAIGN_BUDGET_FIELDS.map((f) => `campaign_budget.${f}`),
          ...CUSTOMER_FIELDS.map((f) => `customer.${f}`),
        ],
        rows: (ctx) => {
          const counts = referenceCounts(ctx.accounts);
          return (ctx.accounts.budgets ?? [])
            .filter((b) => b.customerId === ctx.customerId)
            .map((b) => ({ ...customerFor(ctx), campaignBudget: budgetJson(ctx.accounts, b, counts) }));
        },
      },
    ],
    [
      'customer',
      {
        fields: CUSTOMER_FIELDS.map((f) => `customer.${f}`),
        rows: (ctx) => ctx.accounts.customers.filter((c) => c.id === ctx.customerId).map(customerRow),
      },
    ],
    [
      'customer_client',
      {
        fields: [
          ...[
            'resource_name',
            'client_customer',
            'level',
            'manager',
            'descriptive_name',
            'currency_code',
            'time_zone',
            'test_account',
            'status',
            'hidden',
            'id',
          ].map((f) => `customer_client.${f}`),
          ...CUSTOMER_FIELDS.map((f) => `customer.${f}`),
        ],
        rows: (ctx) => {
          const root = ctx.accounts.customers.find((c) => c.id === ctx.customerId);
          if (!root) return [];
          const hidden = (id: string) =>
            ctx.accounts.links.some((l) => l.clientId === id && l.hidden === true);
          return [{ id: root.id, level: 0 }, ...descendants(ctx.accounts, root.id)].flatMap(
            ({ id, level }) => {
              const c = ctx.accounts.customers.find((x) => x.id === id);
              if (!c) return [];
              return [
                {
                  ...customerRow(root),
                  customerClient: {
                    resourceName: `customers/${root.id}/customerClients/${c.id}`,
                    clientCustomer: `customers/${c.id}`,
                    level: String(level),
                    manager: c.manager,
                    descriptiveName: c.descriptiveName,
                    currencyCode: c.currencyCode,
                    timeZone: c.timeZone,
                    testAccount: c.testAccount,
                    status: c.status,
                    hidden: hidden(c.id),
                    id: c.id,
                  },
                },
              ];
            },
          );
        },
      },
    ],
  ]);
}

// --- routes -----------------------------------------------------------------------------------------

type Ctx = RouteContext<GoogleAccounts, GoogleSettings>;

function listAccessibleCustomers({ req, params, double }: Ctx): Reply {
  const version = params['version'] ?? '';
  const versionError = checkVersion(double, version);
  if (versionError) return versionError;
  // Needs only the Bearer token: developer-token is optional, login-customer-id is ignored.
  const auth = double.authenticate(req);
  if (!auth.ok) return unauthenticated(auth.reason);
  const quota = takeQuotaFault(double, version);
  if (quota) return quota;
  return json(200, { resourceNames: auth.accounts.accessible.map((id) => `customers/${id}`) });
}

/** A search result set cached behind page tokens (the API caches the whole set for later pages). */
interface PageCursor {
  query: string;
  customerId: string;
  results: GaqlRow[];
  fieldMask: string;
  offset: number;
  expiresAt: number;
}

const pageCursors = new WeakMap<GoogleDouble, Map<string, PageCursor>>();

function cursorsOf(double: GoogleDouble): Map<string, PageCursor> {
  let cursors = pageCursors.get(double);
  if (!cursors) {
    cursors = new Map();
    pageCursors.set(double, cursors);
  }
  return cursors;
}

function requestError(version: string, code: string, message: string): Reply {
  return googleAdsFailure(400, version, [{ errorCode: { requestError: code }, message }]);
}

/** One page of a search: rows from `offset`, and a token for the rest when rows remain. */
function searchPage(double: GoogleDouble, cursor: Omit<PageCursor, 'expiresAt'>): Record<string, unknown> {
  const size = Math.max(1, Math.floor(double.settings.searchPageSize));
  const page = cursor.results.slice(cursor.offset, cursor.offset + size);
  const answer: Record<string, unknown> = {};
  if (page.length > 0) answer['results'] = page;
  if (cursor.offset + size < cursor.results.length) {
    const token = randomToken(24);
    cursorsOf(double).set(token, {
      ...cursor,
      offset: cursor.offset + size,
      expiresAt: double.now() + double.settings.pageTokenTtlSeconds * 1000,
    });
    answer['nextPageToken'] = token;
  }
  answer['fieldMask'] = cursor.fieldMask;
  return answer;
}

function search(ctx: Ctx, stream: boolean): Reply {
  const call = checkGoogleAdsCall(ctx);
  if ('status' in call) return call;
  const quota = takeQuotaFault(ctx.double, call.version, call.customerId);
  if (quota) return quota;
  const body = ctx.req.json;
  if (body === null || typeof body !== 'object' || typeof (body as { query?: unknown }).query !== 'string')
    return googleAdsFailure(400, call.version, [
      { errorCode: { queryError: 'PROHIBITED_EMPTY_LIST_IN_CONDITION' }, message: 'Missing query.' },
    ]);
  // The JSON front end refuses a field the request message does not have (SearchGoogleAdsRequest;
  // SearchGoogleAdsStreamRequest has no paging fields).
  const known = stream
    ? ['customerId', 'query', 'summaryRowSetting']
    : [
        'customerId',
        'query',
        'pageToken',
        'pageSize',
        'validateOnly',
        'returnTotalResultsCount',
        'summaryRowSetting',
        'searchSettings',
      ];
  const unknown = fieldsOf(body as Record<string, unknown>, known).unknown;
  if (unknown !== undefined) return unknownName(unknown, '');
  const request = body as { query: string; pageSize?: unknown; pageToken?: unknown };
  if (!stream && request.pageSize !== undefined)
    return requestError(
      call.version,
      'PAGE_SIZE_NOT_SUPPORTED',
      "Setting the page size is not supported. Search Responses will have fixed page size of '10000' rows.",
    );
  const pageToken = stream ? '' : request.pageToken;
  const loop = ctx.double.settings.searchLoopToken;
  if (!stream && loop !== null) return json(200, { results: [], nextPageToken: loop });
  if (pageToken !== undefined && pageToken !== '') {
    const cursor = typeof pageToken === 'string' ? cursorsOf(ctx.double).get(pageToken) : undefined;
    // [guess] a token sent with another query or customer answers INVALID_PAGE_TOKEN (the paging guide
    // only says "an error is returned").
    if (!cursor || cursor.query !== request.query || cursor.customerId !== call.customerId)
      return requestError(
        call.version,
        'INVALID_PAGE_TOKEN',
        'Next page token specified in user request is invalid.',
      );
    if (ctx.double.now() >= cursor.expiresAt)
      return requestError(
        call.version,
        'EXPIRED_PAGE_TOKEN',
        'Next page token specified in user request has expired.',
      );
    return json(200, searchPage(ctx.double, cursor));
  }
  try {
    const { results, fieldMask } = queryGaql(request.query, { double: ctx.double, ...call });
    if (stream) {
      const answer: Record<string, unknown> = results.length > 0 ? { results, fieldMask } : { fieldMask };
      return json(200, [{ ...answer, requestId: randomToken(16) }]);
    }
    return json(
      200,
      searchPage(ctx.double, {
        query: request.query,
        customerId: call.customerId,
        results,
        fieldMask,
        offset: 0,
      }),
    );
  } catch (error) {
    if (error instanceof GaqlError)
      return googleAdsFailure(400, call.version, [{ errorCode: error.errorCode, message: error.message }]);
    throw error;
  }
}

// --- campaignBudgets:mutate ---------------------------------------------------------------------

/** CampaignBudget fields (proto3 JSON names) and what an update may do with each. */
const BUDGET_FIELDS: Record<string, 'modelled' | 'output-only' | 'immutable' | 'not-modelled'> = {
  resourceName: 'immutable',
  id: 'output-only',
  name: 'not-modelled',
  amountMicros: 'modelled',
  totalAmountMicros: 'not-modelled',
  status: 'output-only',
  deliveryMethod: 'not-modelled',
  explicitlyShared: 'not-modelled',
  referenceCount: 'output-only',
  hasRecommendedBudget: 'output-only',
  recommendedBudgetAmountMicros: 'output-only',
  period: 'immutable',
  recommendedBudgetEstimatedChangeWeeklyClicks: 'output-only',
  recommendedBudgetEstimatedChangeWeeklyCostMicros: 'output-only',
  recommendedBudgetEstimatedChangeWeeklyInteractions: 'output-only',
  recommendedBudgetEstimatedChangeWeeklyViews: 'output-only',
  type: 'immutable',
  alignedBiddingStrategyId: 'not-modelled',
};

const INT64_MAX = 9_223_372_036_854_775_807n;

function snake(camelName: string): string {
  return camelName.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Reads a proto3 JSON field: the parser accepts the lowerCamelCase JSON name and the proto field name.
 * Returns the unknown key when the object has one.
 */
function fieldsOf(
  object: Record<string, unknown>,
  known: string[],
): { get: (name: string) => unknown; unknown: string | undefined } {
  const names = new Set(known.flatMap((k) => [k, snake(k)]));
  return {
    get: (name) => object[name] ?? object[snake(name)],
    unknown: Object.keys(object).find((k) => !names.has(k)),
  };
}

function unknownName(name: string, at: string): Reply {
  return invalidPayload(at, `Unknown name "${name}"${at ? ` at '${at}'` : ''}: Cannot find field.`);
}

/** An int64 in proto3 JSON: a decimal string or an integral number within range. */
function parseInt64(value: unknown): bigint | null {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value !== 'string' || !/^-?\d+$/.test(value)) return null;
  const parsed = BigInt(value);
  return parsed > INT64_MAX || parsed < -INT64_MAX - 1n ? null : parsed;
}

function at(index: number, ...path: string[]): GoogleAdsError['location'] {
  return {
    fieldPathElements: [{ fieldName: 'operations', index }, ...path.map((fieldName) => ({ fieldName }))],
  };
}

type BudgetOperation =
  | { ok: true; budget: GoogleCampaignBudget; amountMicros: string | undefined }
  | { ok: false; error: GoogleAdsError };

/** Validates one operation against the account data; never changes anything. */
function checkBudgetOperation(
  double: GoogleDouble,
  call: GoogleAdsCall,
  operation: Record<string, unknown>,
  index: number,
  seen: Set<string>,
): BudgetOperation | Reply {
  const op = fieldsOf(operation, ['updateMask', 'create', 'update', 'remove']);
  if (op.unknown !== undefined) return unknownName(op.unknown, `operations[${index}]`);
  if (op.get('create') !== undefined || op.get('remove') !== undefined)
    throw new Error('Google double: campaignBudgets:mutate models update operations only (no create/remove)');
  const update = op.get('update');
  if (!isRecord(update))
    return {
      ok: false,
      error: {
        errorCode: { requestError: 'OPERATION_REQUIRED' },
        message: "Mutate operations must have 'create', 'update', or 'remove' specified.",
        location: at(index),
      },
    };
  const fields = fieldsOf(update, Object.keys(BUDGET_FIELDS));
  if (fields.unknown !== undefined) return unknownName(fields.unknown, `operations[${index}].update`);
  const fail = (errorCode: Record<string, string>, message: string, extra: Partial<GoogleAdsError> = {}) => ({
    ok: false as const,
    error: { errorCode, message, ...extra },
  });
  const resourceName = fields.get('resourceName');
  if (typeof resourceName !== 'string' || resourceName === '')
    return fail({ requestError: 'RESOURCE_NAME_MISSING' }, 'Resource name is missing.', {
      location: at(index, 'update', 'resource_name'),
    });
  const match = /^customers\/(\d+)\/campaignBudgets\/(\d+)$/.exec(resourceName);
  if (!match)
    return fail({ requestError: 'RESOURCE_NAME_MALFORMED' }, 'Resource name is malformed.', {
      trigger: { stringValue: resourceName },
      location: at(index, 'update', 'resource_name'),
    });
  // [guess] a budget of another customer than the URL's is simply not found in this customer.
  const budget = (call.accounts.budgets ?? []).find((b) => b.customerId === match[1] && b.id === match[2]);
  if (!budget || match[1] !== call.customerId)
    return fail({ mutateError: 'RESOURCE_NOT_FOUND' }, 'Resource was not found.', {
      trigger: { stringValue: resourceName },
      location: at(index, 'update', 'resource_name'),
    });
  if (seen.has(resourceName))
    return fail(
      { mutateError: 'ID_EXISTS_IN_MULTIPLE_MUTATES' },
      'Cannot mutate the same resource twice in one request.',
      {
        location: at(index, 'update', 'resource_name'),
      },
    );
  seen.add(resourceName);
  if (budget.status === 'REMOVED')
    return fail(
      { campaignBudgetError: 'CAMPAIGN_BUDGET_REMOVED' },
      'The requested campaign budget no longer exists.',
      {
        location: at(index, 'update'),
      },
    );
  const mask = op.get('updateMask');
  if (mask === undefined || mask === '')
    return fail(
      { fieldMaskError: 'FIELD_MASK_MISSING' },
      'The field mask must be provided for update operations.',
      {
        location: at(index, 'update_mask'),
      },
    );
  if (typeof mask !== 'string')
    return invalidPayload(`operations[${index}].update_mask`, 'Invalid FieldMask.');
  let amountMicros: string | undefined;
  for (const raw of mask.split(',').map((p) => p.trim())) {
    const path = raw.includes('_') && double.settings.acceptSnakeCaseUpdateMask ? camel(raw) : raw;
    const kind = Object.hasOwn(BUDGET_FIELDS, path) ? BUDGET_FIELDS[path] : undefined;
    if (kind === undefined)
      return fail({ fieldMaskError: 'FIELD_NOT_FOUND' }, 'The field mask contained an invalid field.', {
        trigger: { stringValue: raw },
        location: at(index, 'update_mask'),
      });
    if (kind === 'output-only' || kind === 'immutable')
      // [guess] the error a read-only or immutable field in the mask gets.
      return fail(
        { requestError: 'IMMUTABLE_FIELD' },
        "The field cannot be modified because it's immutable.",
        {
          location: at(index, 'update', snake(path)),
        },
      );
    if (kind === 'not-modelled')
      throw new Error(`Google double: updating CampaignBudget.${path} is not modelled (only amountMicros)`);
    const value = fields.get(path);
    if (value === undefined)
      // [guess] clearing the amount of a daily budget: the field is required.
      return fail({ fieldError: 'REQUIRED' }, 'The required field was not present.', {
        location: at(index, 'update', snake(path)),
      });
    const micros = parseInt64(value);
    if (micros === null)
      return invalidPayload(
        `operations[${index}].update.amount_micros`,
        `Invalid value at 'operations[${index}].update.amount_micros' (TYPE_INT64), ${JSON.stringify(value)}`,
      );
    const budgetError = (code: string, message: string) =>
      fail({ campaignBudgetError: code }, message, {
        trigger: { int64Value: String(micros) },
        location: at(index, 'update', 'amount_micros'),
      });
    const currency = call.accounts.customers.find((c) => c.id === call.customerId)?.currencyCode ?? 'USD';
    const unit = BigInt(double.settings.currencyMinimumUnitMicros[currency] ?? 10_000);
    if (micros < 0n) return budgetError('NEGATIVE_MONEY_AMOUNT', 'A money amount was negative.');
    if (micros === 0n)
      // [guess] a zero daily budget is below the currency's minimum.
      return budgetError(
        'MONEY_AMOUNT_LESS_THAN_CURRENCY_MINIMUM_CPC',
        'A money amount was less than the minimum CPC for currency.',
      );
    if (micros > double.settings.maxBudgetAmountMicros)
      return budgetError('MONEY_AMOUNT_TOO_LARGE', 'A money amount was greater than the maximum allowed.');
    if (micros % unit !== 0n)
      return budgetError(
        'NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT',
        'A money amount was not a multiple of a minimum unit.',
      );
    amountMicros = String(micros);
  }
  // Fields given but not named in the mask are ignored, as a FieldMask update does.
  return { ok: true, budget, amountMicros };
}

/**
 * POST /{version}/customers/{cid}/campaignBudgets:mutate — update operations on `amountMicros`.
 * All-or-nothing unless partialFailure; validateOnly checks everything and changes nothing.
 */
function mutateCampaignBudgets(ctx: Ctx): Reply {
  const call = checkGoogleAdsCall(ctx);
  if ('status' in call) return call;
  const { double } = ctx;
  const quota = takeQuotaFault(double, call.version, call.customerId);
  if (quota) return quota;
  const body = ctx.req.json;
  if (!isRecord(body)) return invalidPayload('', 'Expected a JSON object.');
  const request = fieldsOf(body, [
    'customerId',
    'operations',
    'partialFailure',
    'validateOnly',
    'responseContentType',
  ]);
  if (request.unknown !== undefined) return unknownName(request.unknown, '');
  const operations = request.get('operations');
  const validateOnly = request.get('validateOnly') === true;
  const partialFailure = request.get('partialFailure') === true;
  const mutableResource = request.get('responseContentType') === 'MUTABLE_RESOURCE';
  if (!Array.isArray(operations) || operations.length === 0)
    // [guess] the error an empty operation list gets.
    return googleAdsFailure(400, call.version, [
      {
        errorCode: { fieldError: 'REQUIRED' },
        message: 'The required field was not present.',
        location: { fieldPathElements: [{ fieldName: 'operations' }] },
      },
    ]);
  if (operations.length > 10_000)
    return requestError(call.version, 'TOO_MANY_MUTATE_OPERATIONS', 'Received too many entries in request.');
  const seen = new Set<string>();
  const checked: BudgetOperation[] = [];
  for (const [index, operation] of operations.entries()) {
    if (!isRecord(operation)) return invalidPayload(`operations[${index}]`, 'Expected an object.');
    const result = checkBudgetOperation(double, call, operation, index, seen);
    if ('status' in result) return result;
    checked.push(result);
  }
  const errors = checked.flatMap((c) => (c.ok ? [] : [c.error]));
  if (errors.length > 0 && !partialFailure) return googleAdsFailure(400, call.version, errors);
  const results = checked.map((c) => {
    if (!c.ok) return {};
    const resourceName = budgetResourceName(c.budget);
    if (!validateOnly && c.amountMicros !== undefined) {
      double.settings.budgetWrites.push({
        at: double.now(),
        customerId: c.budget.customerId,
        budgetId: c.budget.id,
        resourceName,
        previousAmountMicros: c.budget.amountMicros,
        amountMicros: c.amountMicros,
      });
      c.budget.amountMicros = c.amountMicros;
    }
    return mutableResource
      ? { resourceName, campaignBudget: budgetJson(call.accounts, c.budget) }
      : { resourceName };
  });
  const answer: Record<string, unknown> = {};
  // validateOnly: "Only errors are returned, not results".
  if (!validateOnly) answer['results'] = results;
  if (errors.length > 0)
    // [guess] the partialFailureError message wording.
    answer['partialFailureError'] = {
      code: 3,
      message:
        errors.length === 1
          ? (errors[0]?.message ?? '')
          : `Multiple errors in ‘details’. First error: ${errors[0]?.message ?? ''}`,
      details: [failureDetail(call.version, errors)],
    };
  return json(200, answer);
}

function revoke({ req, double }: Ctx): Reply {
  const value = req.form?.get('token') ?? req.query.get('token');
  if (!value) return oauthError(400, 'invalid_request', 'Missing required parameter: token');
  // Revoking an access token also revokes its refresh token (Google OAuth docs).
  const kind = revokeToken(double, value, true);
  if (kind === null) return oauthError(400, 'invalid_token', 'Token expired or revoked');
  return json(200, {});
}

const routes: RouteDef<GoogleAccounts, GoogleSettings>[] = [
  {
    method: 'GET',
    pattern: '/{version}/customers:listAccessibleCustomers',
    handler: listAccessibleCustomers,
  },
  {
    method: 'POST',
    pattern: '/{version}/customers/{cid}/googleAds:search',
    handler: (ctx) => search(ctx, false),
  },
  {
    method: 'POST',
    pattern: '/{version}/customers/{cid}/googleAds:searchStream',
    handler: (ctx) => search(ctx, true),
  },
  {
    method: 'POST',
    pattern: '/{version}/customers/{cid}/campaignBudgets:mutate',
    handler: mutateCampaignBudgets,
  },
];

export async function startGoogleDouble(options: GoogleDoubleOptions = {}): Promise<GoogleDouble> {
  const settings: GoogleSettings = {
    minVersion: options.minVersion ?? 23,
    requireDeveloperToken: options.requireDeveloperToken ?? false,
    consentedClients: new Set(),
    refreshTokenTtlSeconds: options.refreshTokenTtlSeconds ?? null,
    refreshTokenIdleSeconds: 180 * 86_400,
    gaqlResources: defaultGaqlResources(),
    searchPageSize: options.searchPageSize ?? 10_000,
    pageTokenTtlSeconds: 2 * 3600,
    searchLoopToken: null,
    currencyMinimumUnitMicros: { ...GOOGLE_CURRENCY_MINIMUM_UNIT_MICROS },
    maxBudgetAmountMicros: 1_000_000_000_000_000n,
    acceptSnakeCaseUpdateMask: true,
    budgetWrites: [],
    quotaFaults: [],
  };
  return startDouble<GoogleAccounts, GoogleSettings>('google', routes, {
    ...options,
    settings,
    defaultAccounts: clone(GOOGLE_DEFAULT_ACCOUNTS),
    defaultClientRegistration: GOOGLE_DEFAULT_CLIENT,
    notFound: (req) =>
      html(
        404,
        '<!DOCTYPE html><title>Error 404 (Not Found)!!1</title>' +
          `<p>The requested URL ${escapeHtml(req.path)} was not found on this server.</p>`,
      ),
    oauth: {
      authorizePath: '/o/oauth2/v2/auth',
      tokenPath: '/token',
      revokePath: '/revoke',
      prefixes: GOOGLE_PREFIXES,
      pkce: () => true,
      redirectMatches: (registered, requested) =>
        redirectUriMatches(registered, requested, 'any-if-unregistered'),
      checkAuthorize: (q) => {
        const accessType = q.get('access_type');
        if (accessType !== null && accessType !== 'online' && accessType !== 'offline')
          return `Invalid access_type: ${accessType}`;
        return undefined;
      },
      authorizeError,
      // Google's denial carries no error_description.
      denyParams: () => ({ error: 'access_denied' }),
      approveParams: (request) => ({ scope: request.scope.join(' '), authuser: '0', prompt: 'consent' }),
      issuesRefreshToken: (request, double) => {
        // A refresh token needs access_type=offline, and comes again only on a first consent or with
        // prompt=consent.
        const offline = request.params['access_type'] === 'offline';
        const prompt = (request.params['prompt'] ?? '').split(' ');
        const first = !double.settings.consentedClients.has(request.clientId);
        double.settings.consentedClients.add(request.clientId);
        return offline && (first || prompt.includes('consent'));
      },
      authenticateClient,
      accessTtlSeconds: () => 3599,
      refreshTtlSeconds: (double) => double.settings.refreshTokenTtlSeconds,
      idleTtlSeconds: (double) => double.settings.refreshTokenIdleSeconds,
      refreshAnswer: 'none',
      tokenError,
      tokenResponse: ({ double, grant, access, refreshToken }) => {
        const body: Record<string, unknown> = {
          access_token: access.token,
          expires_in: Math.round((access.expiresAt - access.issuedAt) / 1000),
        };
        if (refreshToken !== undefined) body['refresh_token'] = refreshToken;
        if (refreshToken !== undefined && grant.refreshExpiresAt !== null)
          body['refresh_token_expires_in'] = Math.max(
            0,
            Math.round((grant.refreshExpiresAt - double.now()) / 1000),
          );
        body['scope'] = grant.scope.join(' ');
        body['token_type'] = 'Bearer';
        if (grant.scope.includes('openid')) {
          body['id_token'] = idToken({
            iss: 'https://accounts.google.com',
            aud: grant.clientId,
            sub: '1170000',
          });
        }
        return body;
      },
      revoke,
    },
  });
}
