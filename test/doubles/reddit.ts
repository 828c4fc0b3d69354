/**
 * Reddit double: www.reddit.com/api/v1 (OAuth) and ads-api.reddit.com/api/v3 (Ads API) on one port.
 * See shared/providers.md §4. Campaigns and ad groups (with their budgets) follow §4.C; field names come
 * from Reddit's OpenAPI spec as published in a generated SDK (selalipop/reddit-ad-sdk, src/resources/
 * ad-accounts/campaigns.ts, ad-groups.ts) and from camlowe/mcp-server-reddit-ads (docs/api-notes.md,
 * src/client.ts, tests). What neither shows is marked [guess] and, where it matters, is a setting.
 */
import {
  authorizeHandler,
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
  splitScope,
  startDouble,
  type TokenErrorKind,
} from './common.js';

export const REDDIT_PREFIXES = { access: 'eyJhbGciOiJSUzI1NiJ9.', refresh: '9001-', code: '' };
export const REDDIT_SCOPES = ['adsread', 'adsedit', 'adsconversions', 'history', 'read'];
export const REDDIT_DEFAULT_BLOCKED_USER_AGENTS = ['node', 'undici', 'python-requests', 'curl'];

export interface RedditBusiness {
  id: string;
  name: string;
  [field: string]: unknown;
}

export interface RedditAdAccount {
  id: string;
  name: string;
  currency: string;
  business_id: string;
  [field: string]: unknown;
}

export type RedditConfiguredStatus = 'ACTIVE' | 'PAUSED' | 'ARCHIVED' | 'DELETED';
export type RedditGoalType = 'DAILY_SPEND' | 'LIFETIME_SPEND';
export type RedditObjective =
  | 'APP_INSTALLS'
  | 'CATALOG_SALES'
  | 'CLICKS'
  | 'CONVERSIONS'
  | 'IMPRESSIONS'
  | 'LEAD_GENERATION'
  | 'VIDEO_VIEWABLE_IMPRESSIONS';

/**
 * A campaign as `GET /ad_accounts/{id}/campaigns` serves it. Money is micro-currency of the ad account's
 * currency (1 USD = 1,000,000). `goal_type`/`goal_value` are the campaign budget and only mean something
 * when `is_campaign_budget_optimization` is true (CBO); otherwise they are null and the budget is on the
 * ad groups. `spend_cap` is a separate lifetime cap, for CBO and non-CBO campaigns alike.
 */
export interface RedditCampaign {
  id: string;
  ad_account_id: string;
  name: string;
  configured_status: RedditConfiguredStatus;
  /** Computed by Reddit; a PATCH of configured_status does not move it (it lags minutes in reality). */
  effective_status: string;
  objective: RedditObjective;
  is_campaign_budget_optimization: boolean;
  goal_type: RedditGoalType | null;
  goal_value: number | null;
  spend_cap: number | null;
  funding_instrument_id: string | null;
  /** ISO 8601. */
  created_at: string;
  /** ISO 8601; a PATCH sets it. */
  modified_at: string;
  [field: string]: unknown;
}

/**
 * An ad group. Its budget is `goal_type`/`goal_value` unless its campaign uses CBO (then both are null).
 * `is_campaign_budget_optimization` and `campaign_objective_type` are read-only and served from the
 * campaign, whatever is stored here.
 */
export interface RedditAdGroup {
  id: string;
  ad_account_id: string;
  campaign_id: string;
  name: string;
  configured_status: RedditConfiguredStatus;
  effective_status: string;
  goal_type: RedditGoalType | null;
  goal_value: number | null;
  bid_strategy: 'BIDLESS' | 'MANUAL_BIDDING' | 'MAXIMIZE_VOLUME' | 'TARGET_CPX' | null;
  /** Can be null for CBO campaigns. */
  bid_type: 'CPC' | 'CPM' | 'CPV' | 'CPV6' | null;
  bid_value: number | null;
  is_campaign_budget_optimization: boolean | null;
  campaign_objective_type: RedditObjective | null;
  optimization_goal: string | null;
  start_time: string | null;
  end_time: string | null;
  created_at: string;
  modified_at: string;
  [field: string]: unknown;
}

export interface RedditAccounts {
  me: { id: string; username: string; [field: string]: unknown };
  businesses: RedditBusiness[];
  adAccounts: RedditAdAccount[];
  /** Campaigns of every ad account (each names its `ad_account_id`); absent: none. */
  campaigns?: RedditCampaign[];
  /** Ad groups of every ad account; absent: none. */
  adGroups?: RedditAdGroup[];
}

export interface RedditSettings {
  /** Largest page the API serves (a client's `page.size` can only lower it); default 1 to force paging. */
  pageSize: number;
  /** Enforce the User-Agent rule on every route. */
  checkUserAgent: boolean;
  /** Lowercase prefixes of generic library User-Agents that get 429. */
  blockedUserAgents: string[];
  /** Scopes the authorize endpoint accepts. */
  validScopes: string[];
  /** Honour PKCE (not part of Reddit's documented flow; default false = ignored). [unconfirmed] */
  pkce: boolean;
  /**
   * Smallest DAILY_SPEND `goal_value` a PATCH may set, in micro-units of the ad account's currency;
   * default 5,000,000 (5 USD/EUR/…). [guess: Reddit's help pages talk of a ~5 USD daily minimum; the API
   * reference states none]
   */
  minDailyBudgetMicros: number;
  /**
   * PATCH of goal_type/goal_value on a campaign without CBO: 'refuse' (400, default) or 'ignore' (200,
   * campaign unchanged, nothing recorded). The spec only says these fields "only work when
   * is_campaign_budget_optimization is true". [guess: which of the two Reddit does]
   */
  campaignGoalWithoutCbo: 'refuse' | 'ignore';
  /**
   * Whether a PATCH may switch an ad group between DAILY_SPEND and LIFETIME_SPEND; default false (400).
   * A campaign's goal_type "cannot be changed after publishing" (spec), so that one is always refused.
   * [guess for ad groups]
   */
  adGroupGoalTypeChangeable: boolean;
}

export interface RedditDoubleOptions extends CommonDoubleOptions<RedditAccounts> {
  pageSize?: number;
  checkUserAgent?: boolean;
  blockedUserAgents?: string[];
  validScopes?: string[];
  pkce?: boolean;
  minDailyBudgetMicros?: number;
  campaignGoalWithoutCbo?: 'refuse' | 'ignore';
  adGroupGoalTypeChangeable?: boolean;
}

/** A PATCH the double applied (refused PATCHes are never recorded). */
export interface RedditAppliedWrite {
  /** `double.now()` when it was applied. */
  at: number;
  kind: 'campaign' | 'ad_group';
  id: string;
  ad_account_id: string;
  /** The `data` object as sent. */
  data: Record<string, unknown>;
  /** For each field sent, its value before the write. */
  before: Record<string, unknown>;
  /** True when it touched goal_type, goal_value or spend_cap. */
  budget: boolean;
}

export interface RedditThrottleOptions {
  /** `x-ratelimit-reset`: seconds until the window ends (default 60). */
  resetSeconds?: number;
  /** `x-ratelimit-used` (default 400, the documented Campaign Management Read quota per 60 s). */
  used?: number;
  /** Adds `Retry-After: <n>` (default: absent). [guess: not seen in any Reddit source] */
  retryAfterSeconds?: number;
}

/** What the Reddit double adds to `Double`. */
export interface RedditAdsHooks {
  /** Every PATCH of a campaign or ad group that was applied, in order. */
  readonly appliedWrites: RedditAppliedWrite[];
  /** The applied PATCHes that touched a budget field (goal_type, goal_value, spend_cap). */
  readonly appliedBudgetWrites: RedditAppliedWrite[];
  /**
   * The next `n` Ads API calls (any path under /api/v3/) answer 429 with Reddit's rate-limit headers and
   * are not processed. Uses `double.faults` (`faults.pending.failures` counts what is left).
   */
  throttleAdsApi(n: number, options?: RedditThrottleOptions): void;
  /** A campaign of `double.accounts` by id (the live object, so a test can read or change it). */
  campaign(id: string): RedditCampaign | undefined;
  /** An ad group of `double.accounts` by id (the live object). */
  adGroup(id: string): RedditAdGroup | undefined;
}

export type RedditDouble = Double<RedditAccounts, RedditSettings> & RedditAdsHooks;

/** The double before the Reddit hooks are attached (what route handlers receive). */
type BaseDouble = Double<RedditAccounts, RedditSettings>;

export const REDDIT_DEFAULT_CLIENT = {
  clientId: 'dOuBlErEdDiTiD',
  clientSecret: 'double-reddit-secret',
  redirectUris: ['http://localhost:8080/callback'],
};

const SEEDED_AT = '2026-01-15T09:30:00Z';

/**
 * A campaign with defaults for what is not given: ACTIVE, CONVERSIONS, no CBO, no budget, no spend cap.
 * For a CBO campaign give `is_campaign_budget_optimization: true` and its `goal_type`/`goal_value`.
 */
export function redditCampaign(
  fields: Pick<RedditCampaign, 'id' | 'ad_account_id'> & Partial<RedditCampaign>,
): RedditCampaign {
  const configured = fields.configured_status ?? 'ACTIVE';
  return {
    name: `Campaign ${fields.id}`,
    configured_status: configured,
    effective_status: configured,
    objective: 'CONVERSIONS',
    is_campaign_budget_optimization: false,
    goal_type: null,
    goal_value: null,
    spend_cap: null,
    funding_instrument_id: null,
    created_at: SEEDED_AT,
    modified_at: SEEDED_AT,
    ...fields,
  };
}

/**
 * An ad group with defaults for what is not given: ACTIVE, a 20.00 DAILY_SPEND budget, manual CPC bid of
 * 1.00. For an ad group of a CBO campaign give `goal_type: null, goal_value: null`.
 */
export function redditAdGroup(
  fields: Pick<RedditAdGroup, 'id' | 'ad_account_id' | 'campaign_id'> & Partial<RedditAdGroup>,
): RedditAdGroup {
  const configured = fields.configured_status ?? 'ACTIVE';
  return {
    name: `Ad group ${fields.id}`,
    configured_status: configured,
    effective_status: configured,
    goal_type: 'DAILY_SPEND',
    goal_value: 20_000_000,
    bid_strategy: 'MANUAL_BIDDING',
    bid_type: 'CPC',
    bid_value: 1_000_000,
    is_campaign_budget_optimization: false,
    campaign_objective_type: null,
    optimization_goal: null,
    start_time: SEEDED_AT,
    end_time: null,
    created_at: SEEDED_AT,
    modified_at: SEEDED_AT,
    ...fields,
  };
}

/**
 * Ids of the seeded campaigns and ad groups (numeric strings, as Reddit's are). a2_xyz (USD) has five
 * campaigns and six ad groups; a2_uvw (EUR) two campaigns and two ad groups.
 */
export const REDDIT_SEED = {
  /** a2_xyz, CBO, DAILY_SPEND 100.00 on the campaign; one ad group without a budget. */
  cboCampaign: '2000000000000000001',
  cboAdGroup: '1000000000000000011',
  /** a2_xyz, no CBO, exactly one ad group, DAILY_SPEND 50.00. */
  singleDailyCampaign: '2000000000000000002',
  singleDailyAdGroup: '1000000000000000021',
  /** a2_xyz, no CBO, two DAILY_SPEND ad groups (25.00 and 30.00), spend cap 5,000.00. */
  twoAdGroupsCampaign: '2000000000000000003',
  twoAdGroupsFirst: '1000000000000000031',
  twoAdGroupsSecond: '1000000000000000032',
  /** a2_xyz, no CBO, one LIFETIME_SPEND ad group (1,000.00). */
  lifetimeCampaign: '2000000000000000004',
  lifetimeAdGroup: '1000000000000000041',
  /** a2_xyz, PAUSED, no CBO, one PAUSED DAILY_SPEND ad group (10.00). */
  pausedCampaign: '2000000000000000005',
  pausedAdGroup: '1000000000000000051',
  /** a2_uvw (EUR), CBO, DAILY_SPEND 40.00; one ad group. */
  eurCboCampaign: '2000000000000000101',
  eurCboAdGroup: '1000000000000000111',
  /** a2_uvw (EUR), no CBO, one DAILY_SPEND ad group (20.00). */
  eurCampaign: '2000000000000000102',
  eurAdGroup: '1000000000000000121',
} as const;

const S = REDDIT_SEED;
const cbo = { goal_type: null, goal_value: null, bid_strategy: 'MAXIMIZE_VOLUME', bid_type: null } as const;

export const REDDIT_DEFAULT_ACCOUNTS: RedditAccounts = {
  me: { id: 't2_abc', username: 'adops' },
  businesses: [{ id: 'biz_1', name: 'Acme' }],
  adAccounts: [
    { id: 'a2_xyz', name: 'Acme Reddit', currency: 'USD', business_id: 'biz_1' },
    { id: 'a2_uvw', name: 'Acme Reddit EU', currency: 'EUR', business_id: 'biz_1' },
  ],
  campaigns: [
    redditCampaign({
      id: S.cboCampaign,
      ad_account_id: 'a2_xyz',
      name: 'Brand - CBO',
      is_campaign_budget_optimization: true,
      goal_type: 'DAILY_SPEND',
      goal_value: 100_000_000,
    }),
    redditCampaign({ id: S.singleDailyCampaign, ad_account_id: 'a2_xyz', name: 'Retargeting' }),
    redditCampaign({
      id: S.twoAdGroupsCampaign,
      ad_account_id: 'a2_xyz',
      name: 'Prospecting',
      objective: 'CLICKS',
      spend_cap: 5_000_000_000,
    }),
    redditCampaign({ id: S.lifetimeCampaign, ad_account_id: 'a2_xyz', name: 'Launch week' }),
    redditCampaign({
      id: S.pausedCampaign,
      ad_account_id: 'a2_xyz',
      name: 'Spring promo',
      configured_status: 'PAUSED',
      objective: 'IMPRESSIONS',
    }),
    redditCampaign({
      id: S.eurCboCampaign,
      ad_account_id: 'a2_uvw',
      name: 'EU brand - CBO',
      is_campaign_budget_optimization: true,
      goal_type: 'DAILY_SPEND',
      goal_value: 40_000_000,
    }),
    redditCampaign({ id: S.eurCampaign, ad_account_id: 'a2_uvw', name: 'EU retargeting' }),
  ],
  adGroups: [
    redditAdGroup({
      id: S.cboAdGroup,
      ad_account_id: 'a2_xyz',
      campaign_id: S.cboCampaign,
      name: 'Brand - all',
      ...cbo,
    }),
    redditAdGroup({
      id: S.singleDailyAdGroup,
      ad_account_id: 'a2_xyz',
      campaign_id: S.singleDailyCampaign,
      name: 'Site visitors 30d',
      goal_value: 50_000_000,
      bid_value: 1_500_000,
    }),
    redditAdGroup({
      id: S.twoAdGroupsFirst,
      ad_account_id: 'a2_xyz',
      campaign_id: S.twoAdGroupsCampaign,
      name: 'r/programming',
      goal_value: 25_000_000,
    }),
    redditAdGroup({
      id: S.twoAdGroupsSecond,
      ad_account_id: 'a2_xyz',
      campaign_id: S.twoAdGroupsCampaign,
      name: 'r/devops',
      goal_value: 30_000_000,
      bid_value: 1_200_000,
    }),
    redditAdGroup({
      id: S.lifetimeAdGroup,
      ad_account_id: 'a2_xyz',
      campaign_id: S.lifetimeCampaign,
      name: 'Launch - lifetime',
      goal_type: 'LIFETIME_SPEND',
      goal_value: 1_000_000_000,
      end_time: '2026-02-15T00:00:00Z',
    }),
    redditAdGroup({
      id: S.pausedAdGroup,
      ad_account_id: 'a2_xyz',
      campaign_id: S.pausedCampaign,
      name: 'Spring - all',
      configured_status: 'PAUSED',
      goal_value: 10_000_000,
      bid_strategy: 'BIDLESS',
      bid_type: 'CPM',
      bid_value: null,
    }),
    redditAdGroup({
      id: S.eurCboAdGroup,
      ad_account_id: 'a2_uvw',
      campaign_id: S.eurCboCampaign,
      name: 'EU brand - all',
      ...cbo,
    }),
    redditAdGroup({
      id: S.eurAdGroup,
      ad_account_id: 'a2_uvw',
      campaign_id: S.eurCampaign,
      name: 'EU visitors',
    }),
  ],
};

/** A User-Agent a test can use that passes the rule. */
export const REDDIT_TEST_USER_AGENT = 'test:credvault-doubles:1.0 (by /u/credvault)';

const UNAUTHORIZED = json(401, { message: 'Unauthorized', error: 401 });
const TOO_MANY = json(429, { message: 'Too Many Requests', error: 429 });

function userAgentRule({ req, double }: { req: RecordedRequest; double: BaseDouble }): Reply | undefined {
  if (!double.settings.checkUserAgent) return undefined;
  const ua = (req.headers['user-agent'] ?? '').trim().toLowerCase();
  if (ua === '' || double.settings.blockedUserAgents.some((prefix) => ua.startsWith(prefix))) return TOO_MANY;
  return undefined;
}

// --- OAuth ------------------------------------------------------------------------------------------

/**
 * Reddit answers most token errors with HTTP 200 and an error body: prawcore (auth.py
 * `_request_token`) checks `if "error" in payload:  # Why are these OKAY responses?` after a 200, and
 * its recorded bad-code exchange is a 200 `{"error": "invalid_grant"}`
 * (tests/integration/cassettes/TestAuthorizer.test_authorize__with_invalid_code.json). Reddit's
 * server code (r2/controllers/oauth2.py) answers an unknown grant type and a missing code or
 * redirect_uri the same way. A refresh is the exception: an unknown or revoked refresh token gets
 * HTTP 400, recorded as `{"error": 400}` (…test_refresh__with_invalid_token.json).
 */
function tokenError(kind: TokenErrorKind, detail: string): Reply {
  if (kind.startsWith('refresh_') || (kind === 'missing_parameter' && detail === 'refresh_token'))
    return json(400, { error: 400 });
  if (kind === 'unsupported_grant_type' || (kind === 'missing_parameter' && detail === 'grant_type'))
    return json(200, { error: 'unsupported_grant_type' });
  if (kind === 'missing_parameter') return json(200, { error: 'invalid_request' });
  return json(200, { error: 'invalid_grant' });
}

/** HTTP Basic only (installed apps: empty password); a client_secret in the body is refused. */
function authenticateClient(req: RecordedRequest, double: BaseDouble): ClientAuth {
  if (req.form?.has('client_secret') || !req.basic) return { reply: UNAUTHORIZED };
  const client = double.clients.get(req.basic.user);
  if (!client) return { reply: UNAUTHORIZED };
  if (client.public) return req.basic.pass === '' ? { client } : { reply: UNAUTHORIZED };
  if (!credentialEquals(req.basic.pass, client.clientSecret)) return { reply: UNAUTHORIZED };
  return { client };
}

function authorizeError(_kind: string, detail: string): Reply {
  return html(
    400,
    `<!doctype html><html><head><title>reddit.com: Bad Request</title></head><body>
<h1>Bad Request</h1><p>${escapeHtml(detail)}</p></body></html>`,
  );
}

function checkAuthorize(q: URLSearchParams, double: BaseDouble): string | undefined {
  const duration = q.get('duration') ?? 'temporary';
  if (duration !== 'temporary' && duration !== 'permanent') return 'invalid duration parameter';
  const scopes = splitScope(q.get('scope') ?? '');
  if (scopes.some((s) => !double.settings.validScopes.includes(s))) return 'invalid scope requested';
  if (q.has('redirect_url')) return 'redirect_url is not a parameter: use redirect_uri';
  return undefined;
}

function revoke({ req, double }: Ctx): Reply {
  const auth = authenticateClient(req, double);
  if ('reply' in auth) return auth.reply;
  const value = req.form?.get('token');
  if (!value) return json(400, { error: 'invalid_request' });
  // RFC 7009: unknown tokens answer 204 too. A refresh token takes its access tokens with it.
  revokeToken(double, value, false);
  return empty(204);
}

// --- Ads API ----------------------------------------------------------------------------------------

type Ctx = RouteContext<RedditAccounts, RedditSettings>;

export interface RedditApiCall {
  accounts: RedditAccounts;
  scope: string[];
}

/** Bearer token with an ads scope (the User-Agent rule runs for every route before this). */
export function checkRedditApiCall(
  ctx: Ctx,
  scopes: string[] = ['adsread', 'adsedit'],
): RedditApiCall | Reply {
  const auth = ctx.double.authenticate(ctx.req);
  if (!auth.ok) return UNAUTHORIZED;
  if (!auth.access.scope.some((s) => scopes.includes(s)))
    return json(403, { message: 'Forbidden', error: 403 });
  return { accounts: auth.accounts, scope: auth.access.scope };
}

/**
 * Pages `items` with `page.size` / `page.token`; `pagination.next_url` is the absolute URL of the next page
 * on this double (other query parameters kept), or null.
 */
export function redditPage<T>(ctx: Ctx, items: T[]): Reply {
  const { req, double } = ctx;
  const asked = Number(req.query.get('page.size') ?? double.settings.pageSize);
  const size = Math.max(
    1,
    Math.min(Number.isNaN(asked) ? double.settings.pageSize : asked, double.settings.pageSize),
  );
  const token = req.query.get('page.token');
  let offset = 0;
  if (token) {
    offset = Number(
      Buffer.from(token, 'base64url')
        .toString('utf8')
        .replace(/^offset:/, ''),
    );
    if (!Number.isInteger(offset) || offset < 0)
      return json(400, { message: 'Invalid page token', error: 400 });
  }
  const data = items.slice(offset, offset + size);
  let nextUrl: string | null = null;
  if (offset + size < items.length) {
    const next = new URL(double.url + req.path);
    for (const [key, value] of req.query) if (key !== 'page.token') next.searchParams.append(key, value);
    next.searchParams.set('page.token', Buffer.from(`offset:${offset + size}`, 'utf8').toString('base64url'));
    nextUrl = next.toString();
  }
  return json(200, { data, pagination: { next_url: nextUrl } });
}

function me(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  return json(200, { data: call.accounts.me });
}

function myBusinesses(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  return redditPage(ctx, call.accounts.businesses);
}

function businessAdAccounts(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  const id = ctx.params['id'] ?? '';
  if (!call.accounts.businesses.some((b) => b.id === id))
    return json(404, { message: 'Not Found', error: 404 });
  return redditPage(
    ctx,
    call.accounts.adAccounts.filter((a) => a.business_id === id),
  );
}

// --- Campaigns and ad groups ---------------------------------------------------------------------------

/** Path prefix of every Ads API call on this double. */
export const REDDIT_ADS_API_PREFIX = '/api/v3/';

const NOT_FOUND = json(404, { message: 'Not Found', error: 404 });

export interface RedditFieldError {
  /** JSON-pointer-like path of the offending field, e.g. `data/goal_value`. */
  field: string;
  message: string;
}

/**
 * An Ads API v3 error: `{"error":{"code":400,"message":…,"fields":[{"field","message"}]}}`. The shape is
 * that of a live field-validation 400 as camlowe/mcp-server-reddit-ads records it (tests/client-core.test.ts);
 * the wording of each message here is [guess].
 */
export function redditAdsError(status: number, message: string, fields?: RedditFieldError[]): Reply {
  const error: Record<string, unknown> = { code: status, message };
  if (fields && fields.length > 0) error['fields'] = fields;
  return json(status, { error });
}

function badField(field: string, message: string): Reply {
  return redditAdsError(400, 'Bad Request', [{ field: `data/${field}`, message }]);
}

/** A rule refusal: a readable message, repeated on the field it is about. */
function refused(field: string, message: string): Reply {
  return redditAdsError(400, message, [{ field: `data/${field}`, message }]);
}

function hooksOf(ctx: Ctx): RedditAdsHooks {
  return ctx.double as RedditDouble;
}

function ownedAccount(accounts: RedditAccounts, adAccountId: string): RedditAdAccount | undefined {
  return accounts.adAccounts.find((a) => a.id === adAccountId);
}

function findCampaign(accounts: RedditAccounts, id: string): RedditCampaign | undefined {
  const found = (accounts.campaigns ?? []).find((c) => c.id === id);
  return found && ownedAccount(accounts, found.ad_account_id) ? found : undefined;
}

function findAdGroup(accounts: RedditAccounts, id: string): RedditAdGroup | undefined {
  const found = (accounts.adGroups ?? []).find((g) => g.id === id);
  return found && ownedAccount(accounts, found.ad_account_id) ? found : undefined;
}

/** The ad group as served: the read-only CBO flag and objective come from its campaign. */
function serveAdGroup(accounts: RedditAccounts, group: RedditAdGroup): RedditAdGroup {
  const campaign = (accounts.campaigns ?? []).find((c) => c.id === group.campaign_id);
  return {
    ...group,
    is_campaign_budget_optimization: campaign ? campaign.is_campaign_budget_optimization : null,
    campaign_objective_type: campaign ? campaign.objective : group.campaign_objective_type,
  };
}

/** `id` filter: repeated (`id=1&id=2`) or comma-separated (`id=1,2`). [guess: the serialization] */
function idFilter(query: URLSearchParams): Set<string> | null {
  const ids = query.getAll('id').flatMap((v) => v.split(',').filter((x) => x !== ''));
  return ids.length > 0 ? new Set(ids) : null;
}

function listCampaigns(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  const accountId = ctx.params['ad_account_id'] ?? '';
  if (!ownedAccount(call.accounts, accountId)) return NOT_FOUND;
  const ids = idFilter(ctx.req.query);
  return redditPage(
    ctx,
    (call.accounts.campaigns ?? []).filter((c) => c.ad_account_id === accountId && (!ids || ids.has(c.id))),
  );
}

/** `campaign_id` narrows to one campaign (Reddit's spec and camlowe's client both use it). */
function listAdGroups(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  const accountId = ctx.params['ad_account_id'] ?? '';
  if (!ownedAccount(call.accounts, accountId)) return NOT_FOUND;
  const campaignId = ctx.req.query.get('campaign_id');
  const ids = idFilter(ctx.req.query);
  const groups = (call.accounts.adGroups ?? []).filter(
    (g) =>
      g.ad_account_id === accountId &&
      (campaignId === null || g.campaign_id === campaignId) &&
      (!ids || ids.has(g.id)),
  );
  return redditPage(
    ctx,
    groups.map((g) => serveAdGroup(call.accounts, g)),
  );
}

function getCampaign(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  const campaign = findCampaign(call.accounts, ctx.params['id'] ?? '');
  return campaign ? json(200, { data: campaign }) : NOT_FOUND;
}

function getAdGroup(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx);
  if ('status' in call) return call;
  const group = findAdGroup(call.accounts, ctx.params['id'] ?? '');
  return group ? json(200, { data: serveAdGroup(call.accounts, group) }) : NOT_FOUND;
}

const STATUSES: RedditConfiguredStatus[] = ['ACTIVE', 'PAUSED', 'ARCHIVED'];
const GOAL_TYPES: RedditGoalType[] = ['DAILY_SPEND', 'LIFETIME_SPEND'];
const BUDGET_FIELDS = ['goal_type', 'goal_value', 'spend_cap'];
const BID_STRATEGIES = ['BIDLESS', 'MANUAL_BIDDING', 'MAXIMIZE_VOLUME', 'TARGET_CPX'];
const BID_TYPES = ['CPC', 'CPM', 'CPV', 'CPV6'];
/** Fields a PATCH may carry; anything else is refused [guess: Reddit may ignore unknown fields]. */
const CAMPAIGN_FIELDS = [
  'name',
  'configured_status',
  'goal_type',
  'goal_value',
  'spend_cap',
  'funding_instrument_id',
];
const AD_GROUP_FIELDS = [
  'name',
  'configured_status',
  'goal_type',
  'goal_value',
  'bid_strategy',
  'bid_type',
  'bid_value',
  'start_time',
  'end_time',
];
const READ_ONLY = [
  'id',
  'ad_account_id',
  'campaign_id',
  'is_campaign_budget_optimization',
  'effective_status',
  'objective',
  'campaign_objective_type',
  'created_at',
  'modified_at',
];

function quoted(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : JSON.stringify(value);
}

function enumList(values: readonly string[]): string {
  return `[${values.map((v) => `'${v}'`).join(', ')}]`;
}

/** Micro-currency amounts are JSON integers: a float or a string is refused. */
function checkMicros(field: string, value: unknown, nullable: boolean): Reply | undefined {
  if (value === null) return nullable ? undefined : badField(field, `None is not of type 'integer'`);
  if (typeof value !== 'number' || !Number.isSafeInteger(value))
    return badField(field, `${quoted(value)} is not of type 'integer'`);
  if (value < 0) return badField(field, `${value} is less than the minimum of 0`);
  return undefined;
}

/** The `data` object of a PATCH body, or the 400 to answer. */
function patchData(req: RecordedRequest): { data: Record<string, unknown> } | { reply: Reply } {
  let body = req.json;
  if (body === undefined && req.body !== '') {
    try {
      body = JSON.parse(req.body);
    } catch {
      return {
        reply: redditAdsError(400, 'Bad Request', [{ field: '', message: 'request body is not valid JSON' }]),
      };
    }
  }
  const data = (body as { data?: unknown } | null | undefined)?.data;
  if (typeof data !== 'object' || data === null || Array.isArray(data))
    return {
      reply: redditAdsError(400, 'Bad Request', [
        { field: 'data', message: "'data' is a required property" },
      ]),
    };
  return { data: data as Record<string, unknown> };
}

/** Type checks shared by campaigns and ad groups. */
function checkFields(data: Record<string, unknown>, allowed: string[]): Reply | undefined {
  for (const [field, value] of Object.entries(data)) {
    if (READ_ONLY.includes(field)) return badField(field, `'${field}' is read-only and cannot be modified`);
    if (!allowed.includes(field))
      return badField(field, `Additional properties are not allowed ('${field}')`);
    if (field === 'goal_value') {
      const error = checkMicros(field, value, false);
      if (error) return error;
    } else if (field === 'spend_cap' || field === 'bid_value') {
      const error = checkMicros(field, value, true);
      if (error) return error;
    } else if (field === 'goal_type') {
      if (!GOAL_TYPES.includes(value as RedditGoalType))
        return badField(field, `${quoted(value)} is not one of ${enumList(GOAL_TYPES)}`);
    } else if (field === 'configured_status') {
      if (!STATUSES.includes(value as RedditConfiguredStatus))
        return badField(field, `${quoted(value)} is not one of ${enumList(STATUSES)}`);
    } else if (field === 'bid_strategy') {
      if (value !== null && !BID_STRATEGIES.includes(value as string))
        return badField(field, `${quoted(value)} is not one of ${enumList(BID_STRATEGIES)}`);
    } else if (field === 'bid_type') {
      if (value !== null && !BID_TYPES.includes(value as string))
        return badField(field, `${quoted(value)} is not one of ${enumList(BID_TYPES)}`);
    } else if (field === 'name') {
      if (typeof value !== 'string') return badField(field, `${quoted(value)} is not of type 'string'`);
    } else if (value !== null && typeof value !== 'string') {
      return badField(field, `${quoted(value)} is not of type 'string'`);
    }
  }
  return undefined;
}

/** A daily budget below the minimum (in the ad account's currency) is refused. */
function checkMinimum(
  double: BaseDouble,
  account: RedditAdAccount | undefined,
  goalType: RedditGoalType | null,
  goalValue: number | null,
): Reply | undefined {
  const min = double.settings.minDailyBudgetMicros;
  if (goalType !== 'DAILY_SPEND' || goalValue === null || goalValue >= min) return undefined;
  const currency = account?.currency ?? '';
  const amount = (micros: number) => `${(micros / 1_000_000).toFixed(2)} ${currency}`.trim();
  return refused(
    'goal_value',
    `goal_value ${goalValue} (${amount(goalValue)}) is below the minimum daily budget of ${min} (${amount(min)})`,
  );
}

function record(
  ctx: Ctx,
  kind: RedditAppliedWrite['kind'],
  target: RedditCampaign | RedditAdGroup,
  data: Record<string, unknown>,
): void {
  const before: Record<string, unknown> = {};
  for (const field of Object.keys(data)) before[field] = target[field] ?? null;
  Object.assign(target, data, { modified_at: new Date(ctx.double.now()).toISOString() });
  const write: RedditAppliedWrite = {
    at: ctx.double.now(),
    kind,
    id: target.id,
    ad_account_id: target.ad_account_id,
    data: clone(data),
    before,
    budget: Object.keys(data).some((f) => BUDGET_FIELDS.includes(f)),
  };
  const hooks = hooksOf(ctx);
  hooks.appliedWrites.push(write);
  if (write.budget) hooks.appliedBudgetWrites.push(write);
}

/**
 * `PATCH /campaigns/{id}` with `{"data":{…}}`. A campaign budget (goal_type/goal_value) only exists with
 * CBO; its goal_type cannot change once published (spec). Validated in full before anything is applied.
 */
function patchCampaign(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx, ['adsedit']);
  if ('status' in call) return call;
  const campaign = findCampaign(call.accounts, ctx.params['id'] ?? '');
  if (!campaign) return NOT_FOUND;
  const body = patchData(ctx.req);
  if ('reply' in body) return body.reply;
  const { data } = body;
  const invalid = checkFields(data, CAMPAIGN_FIELDS);
  if (invalid) return invalid;
  if (typeof data['name'] === 'string' && data['name'].length < 3)
    return badField(
      'name',
      `'${data['name']}' is too short: the campaign name must be at least 3 characters`,
    );
  const touchesGoal = 'goal_type' in data || 'goal_value' in data;
  if (touchesGoal && !campaign.is_campaign_budget_optimization) {
    if (ctx.double.settings.campaignGoalWithoutCbo === 'ignore') {
      // Reddit may drop the fields silently: answer as if applied, change nothing else.
      const { goal_type: _type, goal_value: _value, ...rest } = data;
      if (Object.keys(rest).length > 0) record(ctx, 'campaign', campaign, rest);
      return json(200, { data: campaign });
    }
    return refused(
      'goal_type' in data ? 'goal_type' : 'goal_value',
      `Campaign ${campaign.id} does not use campaign budget optimization (is_campaign_budget_optimization is false): ` +
        'goal_type and goal_value only work on CBO campaigns; set the budget on its ad groups',
    );
  }
  if ('goal_type' in data && campaign.goal_type !== null && data['goal_type'] !== campaign.goal_type)
    return refused(
      'goal_type',
      `goal_type cannot be changed after publishing the campaign (it is ${campaign.goal_type ?? 'null'})`,
    );
  const goalType = (data['goal_type'] as RedditGoalType | undefined) ?? campaign.goal_type;
  const goalValue = 'goal_value' in data ? (data['goal_value'] as number) : campaign.goal_value;
  if ('goal_value' in data) {
    const low = checkMinimum(
      ctx.double,
      ownedAccount(call.accounts, campaign.ad_account_id),
      goalType,
      goalValue,
    );
    if (low) return low;
  }
  record(ctx, 'campaign', campaign, data);
  return json(200, { data: campaign });
}

/**
 * `PATCH /ad_groups/{id}` with `{"data":{…}}`. An ad group of a CBO campaign has no budget of its own;
 * otherwise goal_type/goal_value are its budget. Validated in full before anything is applied.
 */
function patchAdGroup(ctx: Ctx): Reply {
  const call = checkRedditApiCall(ctx, ['adsedit']);
  if ('status' in call) return call;
  const group = findAdGroup(call.accounts, ctx.params['id'] ?? '');
  if (!group) return NOT_FOUND;
  const body = patchData(ctx.req);
  if ('reply' in body) return body.reply;
  const { data } = body;
  const invalid = checkFields(data, AD_GROUP_FIELDS);
  if (invalid) return invalid;
  const campaign = (call.accounts.campaigns ?? []).find((c) => c.id === group.campaign_id);
  const touchesGoal = 'goal_type' in data || 'goal_value' in data;
  if (touchesGoal && campaign?.is_campaign_budget_optimization)
    return refused(
      'goal_type' in data ? 'goal_type' : 'goal_value',
      `Ad group ${group.id} belongs to campaign ${campaign.id}, which uses campaign budget optimization: ` +
        'its budget is the campaign goal_value; ad groups of a CBO campaign cannot have their own',
    );
  if (
    'goal_type' in data &&
    group.goal_type !== null &&
    data['goal_type'] !== group.goal_type &&
    !ctx.double.settings.adGroupGoalTypeChangeable
  )
    return refused(
      'goal_type',
      `goal_type of ad group ${group.id} is ${group.goal_type} and cannot be changed to ${String(data['goal_type'])}`,
    );
  const goalType = (data['goal_type'] as RedditGoalType | undefined) ?? group.goal_type;
  const goalValue = 'goal_value' in data ? (data['goal_value'] as number) : group.goal_value;
  if ('goal_type' in data && goalValue === null)
    return badField('goal_value', `goal_value is required with goal_type ${String(goalType)}`);
  if (touchesGoal) {
    const low = checkMinimum(
      ctx.double,
      ownedAccount(call.accounts, group.ad_account_id),
      goalType,
      goalValue,
    );
    if (low) return low;
  }
  record(ctx, 'ad_group', group, data);
  return json(200, { data: serveAdGroup(call.accounts, group) });
}

/** Reddit answers 404, not 405, to a method a path does not support (camlowe docs/api-notes.md). */
const wrongMethod = (): Reply => NOT_FOUND;

const routes: RouteDef<RedditAccounts, RedditSettings>[] = [
  { method: 'GET', pattern: '/api/v3/me', handler: me },
  { method: 'GET', pattern: '/api/v3/me/businesses', handler: myBusinesses },
  { method: 'GET', pattern: '/api/v3/businesses/{id}/ad_accounts', handler: businessAdAccounts },
  { method: 'GET', pattern: '/api/v3/ad_accounts/{ad_account_id}/campaigns', handler: listCampaigns },
  { method: 'GET', pattern: '/api/v3/ad_accounts/{ad_account_id}/ad_groups', handler: listAdGroups },
  { method: 'GET', pattern: '/api/v3/campaigns/{id}', handler: getCampaign },
  { method: 'PATCH', pattern: '/api/v3/campaigns/{id}', handler: patchCampaign },
  { method: 'GET', pattern: '/api/v3/ad_groups/{id}', handler: getAdGroup },
  { method: 'PATCH', pattern: '/api/v3/ad_groups/{id}', handler: patchAdGroup },
  // Creating (POST on the collections) is not served; account-scoped single objects
  // (/ad_accounts/{id}/campaigns/{id}) match no route and get the 404 too.
  ...['POST', 'PUT', 'PATCH', 'DELETE'].flatMap((method) => [
    { method, pattern: '/api/v3/ad_accounts/{ad_account_id}/campaigns', handler: wrongMethod },
    { method, pattern: '/api/v3/ad_accounts/{ad_account_id}/ad_groups', handler: wrongMethod },
  ]),
  ...['POST', 'PUT', 'DELETE'].flatMap((method) => [
    { method, pattern: '/api/v3/campaigns/{id}', handler: wrongMethod },
    { method, pattern: '/api/v3/ad_groups/{id}', handler: wrongMethod },
  ]),
];

/**
 * The next `n` calls under /api/v3/ answer 429 as a throttled client sees it: Reddit's rate-limit headers
 * (`x-ratelimit-used`, `x-ratelimit-remaining`, `x-ratelimit-reset` in seconds, as reddit.com documents
 * them; that ads-api.reddit.com sends the same is [guess]) and the `{"message","error"}` body reddit.com
 * uses for 429. Remaining is written `0.0`, as reddit.com writes it (a float).
 */
function throttle(double: BaseDouble, n: number, options: RedditThrottleOptions): void {
  const headers: Record<string, string> = {
    'x-ratelimit-used': String(options.used ?? 400),
    'x-ratelimit-remaining': '0.0',
    'x-ratelimit-reset': String(options.resetSeconds ?? 60),
  };
  if (options.retryAfterSeconds !== undefined) headers['retry-after'] = String(options.retryAfterSeconds);
  double.faults.failNext(n, {
    path: REDDIT_ADS_API_PREFIX,
    status: 429,
    body: { message: 'Too Many Requests', error: 429 },
    headers,
  });
}

export async function startRedditDouble(options: RedditDoubleOptions = {}): Promise<RedditDouble> {
  const settings: RedditSettings = {
    pageSize: options.pageSize ?? 1,
    checkUserAgent: options.checkUserAgent ?? true,
    blockedUserAgents: options.blockedUserAgents ?? [...REDDIT_DEFAULT_BLOCKED_USER_AGENTS],
    validScopes: options.validScopes ?? [...REDDIT_SCOPES],
    pkce: options.pkce ?? false,
    minDailyBudgetMicros: options.minDailyBudgetMicros ?? 5_000_000,
    campaignGoalWithoutCbo: options.campaignGoalWithoutCbo ?? 'refuse',
    adGroupGoalTypeChangeable: options.adGroupGoalTypeChangeable ?? false,
  };
  const double = await startDouble<RedditAccounts, RedditSettings>('reddit', routes, {
    ...options,
    settings,
    defaultAccounts: clone(REDDIT_DEFAULT_ACCOUNTS),
    defaultClientRegistration: REDDIT_DEFAULT_CLIENT,
    before: userAgentRule,
    notFound: () => json(404, { message: 'Not Found', error: 404 }),
    oauth: {
      authorizePath: '/api/v1/authorize',
      tokenPath: '/api/v1/access_token',
      revokePath: '/api/v1/revoke_token',
      prefixes: REDDIT_PREFIXES,
      pkce: (d) => d.settings.pkce,
      redirectMatches: (registered, requested) => redirectUriMatches(registered, requested, 'exact'),
      checkAuthorize,
      authorizeError,
      denyParams: () => ({ error: 'access_denied' }),
      // duration=permanent earns a refresh token; temporary (the default) does not.
      issuesRefreshToken: (request) => request.params['duration'] === 'permanent',
      authenticateClient,
      accessTtlSeconds: () => 3600,
      refreshTtlSeconds: () => null,
      refreshAnswer: 'none',
      tokenError,
      tokenResponse: ({ grant, access, refreshToken }) => {
        const body: Record<string, unknown> = {
          access_token: access.token,
          token_type: 'bearer',
          expires_in: Math.round((access.expiresAt - access.issuedAt) / 1000),
        };
        if (refreshToken !== undefined) body['refresh_token'] = refreshToken;
        body['scope'] = grant.scope.join(' ');
        return body;
      },
      revoke,
    },
  });
  // The compact (mobile) authorize page behaves the same.
  double.route('GET', '/api/v1/authorize.compact', authorizeHandler);
  const hooks: RedditAdsHooks = {
    appliedWrites: [],
    appliedBudgetWrites: [],
    throttleAdsApi: (n, throttleOptions = {}) => throttle(double, n, throttleOptions),
    campaign: (id) => (double.accounts.campaigns ?? []).find((c) => c.id === id),
    adGroup: (id) => (double.accounts.adGroups ?? []).find((g) => g.id === id),
  };
  return Object.assign(double, hooks);
}
