/**
 * LinkedIn double: www.linkedin.com/oauth/v2 (standard 3-legged web flow, MDP refresh tokens) and
 * api.linkedin.com/rest (versioned Marketing API: ad accounts, ad campaigns) on one port. See
 * shared/providers.md §3.
 */

import type { IncomingMessage, Server } from 'node:http';
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

/** A money amount as LinkedIn writes it: a decimal string in whole currency units (not micros). */
export interface LinkedInMoney {
  amount: string;
  currencyCode: string;
}

export type LinkedInCampaignStatus =
  | 'ACTIVE'
  | 'PAUSED'
  | 'ARCHIVED'
  | 'COMPLETED'
  | 'CANCELED'
  | 'DRAFT'
  | 'PENDING_DELETION'
  | 'REMOVED';

export const LINKEDIN_CAMPAIGN_STATUSES: readonly LinkedInCampaignStatus[] = [
  'ACTIVE',
  'PAUSED',
  'ARCHIVED',
  'COMPLETED',
  'CANCELED',
  'DRAFT',
  'PENDING_DELETION',
  'REMOVED',
];

/**
 * An ad campaign as the double stores it: plain numbers for ids (served as URNs where LinkedIn serves
 * URNs), budgets in the owning account's currency. Fields not listed here are served as they are.
 */
export interface LinkedInCampaign {
  id: number;
  /** The ad account (served as `urn:li:sponsoredAccount:{account}`). */
  account: number;
  name: string;
  status: LinkedInCampaignStatus;
  /** Served as `urn:li:sponsoredCampaignGroup:{campaignGroup}`. */
  campaignGroup: number;
  /** null: the campaign has no daily budget (the field is absent from the answer). */
  dailyBudget: LinkedInMoney | null;
  totalBudget?: LinkedInMoney | null;
  type?: string;
  costType?: string;
  test?: boolean;
  runSchedule?: { start: number; end?: number };
  /** Epoch ms, served as changeAuditStamps.created.time. */
  createdAt?: number;
  /** Epoch ms, served as changeAuditStamps.lastModified.time (moved by every applied update). */
  lastModifiedAt?: number;
  /** Served as version.versionTag (a string); incremented by every applied update. */
  versionTag?: number;
  [field: string]: unknown;
}

export interface LinkedInAccounts {
  /** The authenticated member. */
  member: string;
  adAccounts: LinkedInAdAccount[];
  /** The member's role on each ad account (accounts without a role are invisible to them). */
  roles: Array<{ account: number; role: string }>;
  /** Ad campaigns of every ad account (absent: none). */
  campaigns?: LinkedInCampaign[];
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
  /**
   * How the Rest.li 2.0 `search=` query parameter must be encoded. 'strict' (default, as LinkedIn):
   * the structural characters `( ) , :` are sent as they are and only the characters inside values
   * are percent-encoded; a value percent-encoded as a whole (what URLSearchParams / encodeURIComponent
   * produce) answers 400 PARAM_INVALID. 'lenient': both forms are accepted.
   */
  restliQueryEncoding: 'strict' | 'lenient';
  /**
   * Answer 400 to a POST on a campaign without `X-RestLi-Method: PARTIAL_UPDATE`. Default false: the
   * Rest.li router maps an entity POST without the header to PARTIAL_UPDATE. [guess: LinkedIn's
   * gateway may differ; its docs always send the header]
   */
  requireRestliMethodHeader: boolean;
  /** adCampaigns search page size: default 100 (documented), maximum 1000 [guess]. */
  campaignPageSize: { default: number; max: number };
  /**
   * Minimum daily budget per currency, a decimal string in whole units. USD 10 is documented; other
   * currencies are not checked unless listed. [guess for anything but USD]
   */
  minDailyBudget: Record<string, string>;
  /** Account roles allowed to change campaigns (VIEWER is read-only even with rw_ads). */
  campaignWriteRoles: string[];
}

export interface LinkedInDoubleOptions extends CommonDoubleOptions<LinkedInAccounts> {
  refreshTokens?: boolean;
  refreshTokenTtlSeconds?: number;
  oldestVersion?: string;
  latestVersion?: string;
  requireRestliProtocol?: boolean;
  denyError?: { error: string; error_description?: string };
  restliQueryEncoding?: 'strict' | 'lenient';
  requireRestliMethodHeader?: boolean;
  campaignPageSize?: { default: number; max: number };
  minDailyBudget?: Record<string, string>;
  campaignWriteRoles?: string[];
}

/** One applied campaign PARTIAL_UPDATE (refused requests are never recorded). */
export interface LinkedInCampaignWrite {
  /** The double's clock (ms) when the update was applied. */
  at: number;
  accountId: number;
  campaignId: number;
  /** The `$set` of the patch, as applied. */
  set: Record<string, unknown>;
  /** The values those fields had before (undefined: the field was absent). */
  previous: Record<string, unknown>;
}

/** An applied change of a campaign's daily budget. */
export interface LinkedInBudgetWrite {
  at: number;
  accountId: number;
  campaignId: number;
  from: LinkedInMoney | null;
  to: LinkedInMoney;
}

export interface LinkedInCampaignControls {
  /** Every applied campaign update, oldest first. Empty it with `campaignWrites.length = 0`. */
  readonly campaignWrites: LinkedInCampaignWrite[];
  /** The applied writes that changed a daily budget, oldest first. */
  budgetWrites(): LinkedInBudgetWrite[];
  /**
   * The next `n` requests under `path` (default '/rest/': every Marketing API call, not the OAuth
   * endpoints) answer LinkedIn's 429 (daily application or member limit reached) without being
   * processed. Armed through `faults`, so `faults.pending` / `faults.reset()` apply.
   */
  throttleNext(n: number, options?: { path?: string }): void;
}

export type LinkedInDouble = Double<LinkedInAccounts, LinkedInSettings> & LinkedInCampaignControls;

export const LINKEDIN_DEFAULT_CLIENT = {
  clientId: '78doublelinkedin',
  clientSecret: 'WPL_AP1.double.secret',
  redirectUris: ['http://localhost:8765/callback'],
};

/** Creation time of seeded campaigns (fixed, so answers are stable). */
const CREATED_AT = Date.UTC(2026, 0, 1);

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
  campaigns: [
    ...[
      { id: 51010001, name: 'Acme - Brand awareness', status: 'ACTIVE', daily: '50.00' },
      { id: 51010002, name: 'Acme - Lead generation', status: 'ACTIVE', daily: '120.00', total: '5000.00' },
      { id: 51010003, name: 'Acme - Retargeting', status: 'PAUSED', daily: '25.00' },
      { id: 51010004, name: 'Acme - Q3 launch', status: 'DRAFT', daily: null, total: '1000.00' },
      { id: 51010005, name: 'Acme - 2025 evergreen', status: 'ARCHIVED', daily: '40.00' },
    ].map((c) =>
      linkedInCampaign(
        { id: 5101, currency: 'USD' },
        {
          id: c.id,
          name: c.name,
          status: c.status as LinkedInCampaignStatus,
          campaignGroup: c.status === 'ARCHIVED' ? 600002 : 600001,
          dailyBudget: c.daily,
          ...(c.total ? { totalBudget: c.total } : {}),
        },
      ),
    ),
    linkedInCampaign(
      { id: 5102, currency: 'EUR' },
      {
        id: 51020001,
        name: 'Acme EU - Awareness',
        status: 'ACTIVE',
        campaignGroup: 600101,
        dailyBudget: '30.00',
      },
    ),
    linkedInCampaign(
      { id: 5102, currency: 'EUR' },
      {
        id: 51020002,
        name: 'Acme EU - Hiring',
        status: 'PAUSED',
        campaignGroup: 600101,
        dailyBudget: '15.00',
      },
    ),
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
function authenticateClient(
  req: RecordedRequest,
  double: Double<LinkedInAccounts, LinkedInSettings>,
): ClientAuth {
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
  /** Names the operation in the 403 for a token without r_ads/rw_ads (default: adAccounts.GET). */
  operation?: string,
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
      operation === undefined
        ? `Not enough permissions to access: adAccounts.GET.${version}`
        : `Not enough permissions to access: ${operation}.${version.slice(0, 6)}01`,
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

// --- Ad campaigns -----------------------------------------------------------------------------------

/**
 * Digits after the decimal point of a currency (USD 2, JPY 0, KWD 3): ISO 4217's minor unit, as
 * Java's Currency gives it [guess: LinkedIn's API is a Java stack; its docs name no table]. Not
 * ICU's, which gives cash digits for some (HUF, IDR, COP, PKR 0; IQD 0 instead of 3).
 */
export function linkedInCurrencyDigits(currency: string): number {
  // ISO 4217's exponents other than 2, of the currencies an ad account is likely to have; copied
  // here rather than taken from credvault's own table, so that a mistake there is caught.
  const iso: Record<string, number> = {
    JPY: 0,
    KRW: 0,
    CLP: 0,
    VND: 0,
    ISK: 0,
    KWD: 3,
    BHD: 3,
    JOD: 3,
    OMR: 3,
  };
  return iso[currency] ?? 2;
}

/**
 * A campaign of `account` with realistic defaults, to seed `accounts.campaigns`:
 * `double.accounts.campaigns?.push(linkedInCampaign(account, { id: 1, dailyBudget: '20.00' }))`.
 * `dailyBudget` / `totalBudget` are amounts in the account's currency (null: none; `dailyBudget`
 * defaults to 100 units). Extra fields are served as they are.
 */
export function linkedInCampaign(
  account: { id: number; currency: string },
  fields: {
    id: number;
    name?: string;
    status?: LinkedInCampaignStatus;
    campaignGroup?: number;
    dailyBudget?: string | null;
    totalBudget?: string | null;
    [field: string]: unknown;
  },
): LinkedInCampaign {
  const { id, name, status, campaignGroup, dailyBudget, totalBudget, ...extra } = fields;
  const money = (amount: string): LinkedInMoney => ({ amount, currencyCode: account.currency });
  const daily =
    dailyBudget === undefined ? (100).toFixed(linkedInCurrencyDigits(account.currency)) : dailyBudget;
  const campaign: LinkedInCampaign = {
    type: 'SPONSORED_UPDATES',
    costType: 'CPM',
    test: false,
    runSchedule: { start: CREATED_AT },
    createdAt: CREATED_AT,
    lastModifiedAt: CREATED_AT,
    versionTag: 1,
    ...extra,
    id,
    account: account.id,
    name: name ?? `Campaign ${id}`,
    status: status ?? 'ACTIVE',
    campaignGroup: campaignGroup ?? 600000 + (account.id % 1000),
    dailyBudget: daily === null ? null : money(daily),
  };
  if (totalBudget !== undefined) campaign.totalBudget = totalBudget === null ? null : money(totalBudget);
  return campaign;
}

const CAMPAIGN_OWN_FIELDS = new Set([
  'id',
  'account',
  'name',
  'status',
  'campaignGroup',
  'dailyBudget',
  'totalBudget',
  'createdAt',
  'lastModifiedAt',
  'versionTag',
]);

/** A campaign as LinkedIn answers it: ids as numbers, references as URN strings, absent budgets omitted. */
export function linkedInCampaignJson(campaign: LinkedInCampaign): Record<string, unknown> {
  const body: Record<string, unknown> = {
    account: `urn:li:sponsoredAccount:${campaign.account}`,
    campaignGroup: `urn:li:sponsoredCampaignGroup:${campaign.campaignGroup}`,
    changeAuditStamps: {
      created: { time: campaign.createdAt ?? CREATED_AT },
      lastModified: { time: campaign.lastModifiedAt ?? campaign.createdAt ?? CREATED_AT },
    },
  };
  if (campaign.dailyBudget) body['dailyBudget'] = { ...campaign.dailyBudget };
  body['id'] = campaign.id;
  body['name'] = campaign.name;
  for (const [key, value] of Object.entries(campaign))
    if (!CAMPAIGN_OWN_FIELDS.has(key) && value !== undefined) body[key] = clone(value);
  body['status'] = campaign.status;
  if (campaign.totalBudget) body['totalBudget'] = { ...campaign.totalBudget };
  body['version'] = { versionTag: String(campaign.versionTag ?? 1) };
  return body;
}

/** LinkedIn's newer 400 envelope (errorDetailType / errorDetails.inputErrors). */
function badRequest(message: string, fieldPath: string, code: string, description = message): Reply {
  return json(
    400,
    {
      errorDetailType: 'com.linkedin.common.error.BadRequest',
      message,
      errorDetails: { inputErrors: [{ description, input: { inputPath: { fieldPath } }, code }] },
      status: 400,
    },
    { 'x-restli-protocol-version': '2.0.0' },
  );
}

/** What LinkedIn answered a percent-encoded `search` (observed against 202601, see the report). */
function invalidParam(fieldPath: string): Reply {
  return badRequest(
    'Invalid param. Please see errorDetails for more information.',
    fieldPath,
    'PARAM_INVALID',
    'Invalid value for param; wrong type or other syntax error',
  );
}

/** `{resource}.{METHOD}.{YYYYMMDD}`, the form of LinkedIn's ACCESS_DENIED messages. */
function permissionKey(resource: string, method: string, version: string): string {
  return `${resource}.${method}.${version.slice(0, 6)}01`;
}

function accessDenied(resource: string, method: string, version: string): Reply {
  return restliError(
    403,
    'ACCESS_DENIED',
    `Not enough permissions to access: ${permissionKey(resource, method, version)}`,
    100,
  );
}

// Rest.li 2.0 data in a query parameter: `(key:value,...)` maps, `List(a,b)` lists, and strings in which
// the reserved characters ( ) , : ' are percent-encoded.

type RestliValue = string | RestliValue[] | { [key: string]: RestliValue };

class RestliSyntaxError extends Error {}

function parseRestli(raw: string): RestliValue {
  let pos = 0;
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text);
    } catch {
      throw new RestliSyntaxError(`bad percent-encoding in ${text}`);
    }
  };
  const readString = (): string => {
    const start = pos;
    while (pos < raw.length && !'(),:'.includes(raw[pos]!)) pos += 1;
    const text = raw.slice(start, pos);
    if (text.includes("'")) {
      if (text === "''") return '';
      throw new RestliSyntaxError(`unexpected ' in ${text}`);
    }
    return decode(text);
  };
  const expect = (char: string) => {
    if (raw[pos] !== char) throw new RestliSyntaxError(`expected ${char} at ${pos}`);
    pos += 1;
  };
  const readValue = (): RestliValue => {
    if (raw[pos] === '(') {
      pos += 1;
      const map: { [key: string]: RestliValue } = {};
      if (raw[pos] === ')') {
        pos += 1;
        return map;
      }
      for (;;) {
        const key = readString();
        if (key === '') throw new RestliSyntaxError(`empty key at ${pos}`);
        expect(':');
        map[key] = readValue();
        if (raw[pos] === ',') {
          pos += 1;
          continue;
        }
        expect(')');
        return map;
      }
    }
    if (raw.startsWith('List(', pos)) {
      pos += 5;
      const list: RestliValue[] = [];
      if (raw[pos] === ')') {
        pos += 1;
        return list;
      }
      for (;;) {
        list.push(readValue());
        if (raw[pos] === ',') {
          pos += 1;
          continue;
        }
        expect(')');
        return list;
      }
    }
    return readString();
  };
  const value = readValue();
  if (pos !== raw.length) throw new RestliSyntaxError(`trailing characters at ${pos}`);
  return value;
}

const RAW_TARGET_HEADER = 'x-linkedin-double-raw-target';
/** The request target as sent (before URL decoding), for requests whose decoding loses information. */
const rawTargets = new WeakMap<RecordedRequest, string>();

/** The value of query parameter `name` as it was sent, percent-encoding included (null: absent). */
function rawQueryParam(req: RecordedRequest, name: string, encoding: 'strict' | 'lenient'): string | null {
  const decoded = req.query.get(name);
  const target = rawTargets.get(req);
  if (decoded === null || encoding === 'lenient' || target === undefined) return decoded;
  const query = target.includes('?') ? target.slice(target.indexOf('?') + 1) : '';
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const key = eq === -1 ? pair : pair.slice(0, eq);
    let decodedKey = key;
    try {
      decodedKey = decodeURIComponent(key.replace(/\+/g, ' '));
    } catch {
      decodedKey = key;
    }
    if (decodedKey === name) return eq === -1 ? '' : pair.slice(eq + 1);
  }
  return decoded;
}

interface CampaignFilter {
  status?: Set<string>;
  id?: Set<number>;
  campaignGroup?: Set<number>;
  type?: Set<string>;
  name?: Set<string>;
  test?: boolean;
}

const URN_FACETS: Record<string, { key: 'id' | 'campaignGroup'; prefix: string }> = {
  id: { key: 'id', prefix: 'urn:li:sponsoredCampaign:' },
  campaignGroup: { key: 'campaignGroup', prefix: 'urn:li:sponsoredCampaignGroup:' },
};

/** The adCampaigns `search` criteria (status, id, campaignGroup, type, name values; test). */
function campaignFilter(raw: string): CampaignFilter | null {
  let parsed: RestliValue;
  try {
    parsed = parseRestli(raw);
  } catch (error) {
    if (error instanceof RestliSyntaxError) return null;
    throw error;
  }
  if (typeof parsed !== 'object' || Array.isArray(parsed)) return null;
  const filter: CampaignFilter = {};
  for (const [facet, criterion] of Object.entries(parsed)) {
    if (facet === 'test') {
      if (criterion !== 'true' && criterion !== 'false') return null;
      filter.test = criterion === 'true';
      continue;
    }
    if (typeof criterion !== 'object' || Array.isArray(criterion)) return null;
    const keys = Object.keys(criterion);
    const values = criterion['values'];
    if (keys.length !== 1 || !Array.isArray(values) || values.some((v) => typeof v !== 'string')) return null;
    const strings = values as string[];
    if (facet === 'status') {
      if (strings.some((v) => !(LINKEDIN_CAMPAIGN_STATUSES as readonly string[]).includes(v))) return null;
      filter.status = new Set(strings);
    } else if (facet === 'type') {
      filter.type = new Set(strings);
    } else if (facet === 'name') {
      filter.name = new Set(strings);
    } else {
      const urn = URN_FACETS[facet];
      if (!urn) return null;
      const ids = new Set<number>();
      for (const value of strings) {
        if (!value.startsWith(urn.prefix) || !/^\d+$/.test(value.slice(urn.prefix.length))) return null;
        ids.add(Number(value.slice(urn.prefix.length)));
      }
      filter[urn.key] = ids;
    }
  }
  return filter;
}

function matches(campaign: LinkedInCampaign, filter: CampaignFilter): boolean {
  if (filter.status && !filter.status.has(campaign.status)) return false;
  if (filter.id && !filter.id.has(campaign.id)) return false;
  if (filter.campaignGroup && !filter.campaignGroup.has(campaign.campaignGroup)) return false;
  if (filter.type && !filter.type.has(String(campaign.type))) return false;
  if (filter.name && !filter.name.has(campaign.name)) return false;
  if (filter.test !== undefined && (campaign.test ?? false) !== filter.test) return false;
  return true;
}

type AccountAccess = { account: LinkedInAdAccount; role: string } | Reply;

/** The ad account of the path, and the member's role on it (no role: 403, as GET /adAccounts/{id}). */
function accountAccess(call: LinkedInApiCall, id: string, resource: string, method: string): AccountAccess {
  if (!/^\d+$/.test(id)) return restliError(400, 'ILLEGAL_ARGUMENT', `Invalid key: ${id}`);
  const account = call.accounts.adAccounts.find((a) => a.id === Number(id));
  if (!account) return restliError(404, 'NOT_FOUND', `Ad account ${id} does not exist`);
  const role = call.accounts.roles.find((r) => r.account === account.id)?.role;
  if (role === undefined) return accessDenied(resource, method, call.version);
  return { account, role };
}

/** Another X-RestLi-Method than the route's: the Rest.li router's 400. */
function restliMethodMismatch(ctx: Ctx, expected: string, required: boolean): Reply | undefined {
  const method = ctx.req.headers['x-restli-method'];
  if (method === undefined ? !required : method.toUpperCase() === expected) return undefined;
  return restliError(
    400,
    'ILLEGAL_ARGUMENT',
    `Method '${ctx.req.method}' is not supported for URI '${ctx.req.path}'` +
      (method === undefined ? ` without X-RestLi-Method: ${expected}` : ''),
  );
}

function pageToken(lastId: number): string {
  return Buffer.from(JSON.stringify({ after: lastId }), 'utf8').toString('base64url');
}

function readPageToken(token: string): number | null {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after?: unknown };
    return typeof parsed.after === 'number' && Number.isInteger(parsed.after) ? parsed.after : null;
  } catch {
    return null;
  }
}

/**
 * `GET /rest/adAccounts/{accountId}/adCampaigns?q=search&search=(status:(values:List(ACTIVE,PAUSED)))
 * &pageSize=N&pageToken=T&sortOrder=ASCENDING|DESCENDING`: cursor paging by campaign id.
 */
function searchCampaigns(ctx: Ctx): Reply {
  const call = checkLinkedInApiCall(ctx, 'adCampaigns.FINDER-search');
  if ('status' in call) return call;
  const { req, double } = ctx;
  const mismatch = restliMethodMismatch(ctx, 'FINDER', false);
  if (mismatch) return mismatch;
  if (req.query.get('q') !== 'search')
    return restliError(400, 'ILLEGAL_ARGUMENT', 'Invalid query parameters passed to request');
  const access = accountAccess(call, ctx.params['accountId'] ?? '', 'adCampaigns', 'FINDER-search');
  if ('status' in access) return access;
  // Protocol 1.0 finder syntax (search.status.values[0]=ACTIVE) is not read under protocol 2.0.0. [guess]
  for (const key of req.query.keys())
    if (key.startsWith('search.') || key.startsWith('search['))
      return badRequest(
        'Invalid param. Please see errorDetails for more information.',
        key,
        'QUERY_PARAM_NOT_ALLOWED',
        `Query parameter ${key} is not allowed`,
      );
  let filter: CampaignFilter = {};
  const search = rawQueryParam(req, 'search', double.settings.restliQueryEncoding);
  if (search !== null) {
    const parsed = campaignFilter(search);
    if (!parsed) return invalidParam('search');
    filter = parsed;
  }
  const { default: defaultSize, max } = double.settings.campaignPageSize;
  const sizeParam = req.query.get('pageSize');
  const size = sizeParam === null ? defaultSize : Number(sizeParam);
  if (!/^\d+$/.test(sizeParam ?? String(defaultSize)) || size < 1 || size > max)
    return invalidParam('pageSize');
  const order = req.query.get('sortOrder') ?? 'ASCENDING';
  if (order !== 'ASCENDING' && order !== 'DESCENDING') return invalidParam('sortOrder');
  const tokenParam = req.query.get('pageToken');
  const after = tokenParam === null || tokenParam === '' ? null : readPageToken(tokenParam);
  if (tokenParam !== null && tokenParam !== '' && after === null) return invalidParam('pageToken');
  const sign = order === 'ASCENDING' ? 1 : -1;
  const all = (call.accounts.campaigns ?? [])
    .filter((c) => c.account === access.account.id && matches(c, filter))
    .sort((a, b) => sign * (a.id - b.id))
    .filter((c) => after === null || sign * (c.id - after) > 0);
  const page = all.slice(0, size);
  const metadata: Record<string, unknown> = {};
  const last = page[page.length - 1];
  if (all.length > size && last) metadata['nextPageToken'] = pageToken(last.id);
  return json(
    200,
    { elements: page.map(linkedInCampaignJson), metadata },
    { 'x-restli-protocol-version': '2.0.0' },
  );
}

const AMOUNT = /^\d+(\.\d+)?$/;

function compareAmounts(a: string, b: string): number {
  const [ai = '0', af = ''] = a.split('.');
  const [bi = '0', bf = ''] = b.split('.');
  const width = Math.max(af.length, bf.length);
  const x = BigInt(ai + af.padEnd(width, '0'));
  const y = BigInt(bi + bf.padEnd(width, '0'));
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Validates a `dailyBudget` of the patch against the account (null: valid). */
function dailyBudgetError(
  value: unknown,
  account: LinkedInAdAccount,
  settings: LinkedInSettings,
): Reply | null {
  const path = '/patch/$set/dailyBudget';
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return badRequest(
      `ERROR :: ${path} :: ${JSON.stringify(value)} is not a record`,
      path,
      'INVALID_VALUE_TYPE',
    );
  const { amount, currencyCode } = value as Record<string, unknown>;
  if (amount === undefined)
    return badRequest(
      `ERROR :: ${path}/amount :: field is required but not found`,
      `${path}/amount`,
      'MISSING_FIELD',
    );
  if (typeof amount !== 'string')
    return badRequest(
      `ERROR :: ${path}/amount :: ${JSON.stringify(amount)} cannot be coerced to String`,
      `${path}/amount`,
      'INVALID_VALUE_TYPE',
    );
  if (currencyCode === undefined)
    return badRequest(
      `ERROR :: ${path}/currencyCode :: field is required but not found`,
      `${path}/currencyCode`,
      'MISSING_FIELD',
    );
  if (typeof currencyCode !== 'string')
    return badRequest(
      `ERROR :: ${path}/currencyCode :: ${JSON.stringify(currencyCode)} cannot be coerced to String`,
      `${path}/currencyCode`,
      'INVALID_VALUE_TYPE',
    );
  if (!AMOUNT.test(amount))
    return badRequest(
      `Daily budget amount "${amount}" is not a valid decimal amount`,
      `${path}/amount`,
      'INVALID_DECIMAL_VALUE',
    );
  if (currencyCode !== account.currency)
    return badRequest(
      `Daily budget currency ${currencyCode} does not match the ad account currency ${account.currency}`,
      `${path}/currencyCode`,
      'CURRENCY_MISMATCH',
    );
  const digits = linkedInCurrencyDigits(currencyCode);
  const fraction = (amount.split('.')[1] ?? '').replace(/0+$/, '');
  if (fraction.length > digits)
    return badRequest(
      `Daily budget amount ${amount} has more than ${digits} digits after the decimal point for ${currencyCode}`,
      `${path}/amount`,
      'INVALID_DECIMAL_VALUE',
    );
  const minimum = settings.minDailyBudget[currencyCode];
  if (minimum !== undefined && compareAmounts(amount, minimum) < 0)
    return badRequest(
      `Daily budget ${amount} ${currencyCode} is below the minimum daily budget of ${minimum} ${currencyCode}`,
      `${path}/amount`,
      'FIELD_VALUE_TOO_LOW',
    );
  return null;
}

/**
 * `POST /rest/adAccounts/{accountId}/adCampaigns/{campaignId}` with `X-RestLi-Method: PARTIAL_UPDATE`
 * and `{"patch":{"$set":{...}}}`: 204 No Content. dailyBudget, status and name are validated; other
 * fields are stored as sent.
 */
function updateCampaign(ctx: Ctx): Reply {
  const call = checkLinkedInApiCall(ctx, 'adCampaigns.PARTIAL_UPDATE');
  if ('status' in call) return call;
  const { req, double } = ctx;
  const mismatch = restliMethodMismatch(ctx, 'PARTIAL_UPDATE', double.settings.requireRestliMethodHeader);
  if (mismatch) return mismatch;
  const access = accountAccess(call, ctx.params['accountId'] ?? '', 'adCampaigns', 'PARTIAL_UPDATE');
  if ('status' in access) return access;
  if (!call.scope.includes('rw_ads') || !double.settings.campaignWriteRoles.includes(access.role))
    return accessDenied('adCampaigns', 'PARTIAL_UPDATE', call.version);
  const body = req.json;
  const patch =
    typeof body === 'object' && body !== null && !Array.isArray(body)
      ? (body as Record<string, unknown>)['patch']
      : undefined;
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch))
    return badRequest(
      'The request body is not a partial update: {"patch":{"$set":{...}}}',
      '/patch',
      'MISSING_FIELD',
    );
  const { $set, ...rest } = patch as Record<string, unknown>;
  const others = Object.keys(rest);
  if (others.length > 0)
    // $delete and nested patches exist in Rest.li; the double does not apply them.
    return badRequest(
      `Unsupported patch operation: ${others.join(', ')}`,
      `/patch/${others[0]}`,
      'INVALID_VALUE',
    );
  if (typeof $set !== 'object' || $set === null || Array.isArray($set) || Object.keys($set).length === 0)
    return badRequest(
      'ERROR :: /patch/$set :: field is required but not found',
      '/patch/$set',
      'MISSING_FIELD',
    );
  const set = $set as Record<string, unknown>;
  const id = ctx.params['campaignId'] ?? '';
  const campaign = /^\d+$/.test(id)
    ? (call.accounts.campaigns ?? []).find((c) => c.id === Number(id) && c.account === access.account.id)
    : undefined;
  if (!campaign)
    return restliError(404, 'NOT_FOUND', `Campaign ${id} does not exist in ad account ${access.account.id}`);
  // Read-only here: identity, audit stamps, and the group (the double stores it as a number). [guess]
  for (const field of [...CAMPAIGN_OWN_FIELDS, 'changeAuditStamps', 'version'].filter(
    (f) => !['name', 'status', 'dailyBudget', 'totalBudget'].includes(f),
  ))
    if (field in set)
      return badRequest(
        `ERROR :: /patch/$set/${field} :: field is read-only`,
        `/patch/$set/${field}`,
        'INVALID_VALUE',
      );
  if ('dailyBudget' in set) {
    const error = dailyBudgetError(set['dailyBudget'], access.account, double.settings);
    if (error) return error;
  }
  if ('status' in set && !(LINKEDIN_CAMPAIGN_STATUSES as readonly unknown[]).includes(set['status']))
    return badRequest(
      `ERROR :: /patch/$set/status :: ${JSON.stringify(set['status'])} is not an enum symbol`,
      '/patch/$set/status',
      'INVALID_VALUE',
    );
  if ('name' in set && (typeof set['name'] !== 'string' || set['name'] === ''))
    return badRequest('ERROR :: /patch/$set/name :: invalid name', '/patch/$set/name', 'INVALID_VALUE');
  const previous: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(set)) {
    previous[field] = clone(campaign[field] ?? undefined);
    campaign[field] = clone(value);
  }
  campaign.lastModifiedAt = double.now();
  campaign.versionTag = (campaign.versionTag ?? 1) + 1;
  stateOf(double).writes.push({
    at: double.now(),
    accountId: access.account.id,
    campaignId: campaign.id,
    set: clone(set),
    previous,
  });
  return empty(204, { 'x-restli-protocol-version': '2.0.0' });
}

/** LinkedIn's answer when the daily application or member limit is reached. No Retry-After. */
export const LINKEDIN_THROTTLE_BODY = {
  status: 429,
  serviceErrorCode: 101,
  message: 'Resource level throttle limit for calls to this resource is reached.',
};

interface LinkedInState {
  writes: LinkedInCampaignWrite[];
}

const states = new WeakMap<object, LinkedInState>();

function stateOf(double: object): LinkedInState {
  let state = states.get(double);
  if (!state) {
    state = { writes: [] };
    states.set(double, state);
  }
  return state;
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
  { method: 'GET', pattern: '/rest/adAccounts/{accountId}/adCampaigns', handler: searchCampaigns },
  {
    method: 'POST',
    pattern: '/rest/adAccounts/{accountId}/adCampaigns/{campaignId}',
    handler: updateCampaign,
  },
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
    restliQueryEncoding: options.restliQueryEncoding ?? 'strict',
    requireRestliMethodHeader: options.requireRestliMethodHeader ?? false,
    campaignPageSize: options.campaignPageSize ?? { default: 100, max: 1000 },
    minDailyBudget: options.minDailyBudget ?? { USD: '10.00' },
    campaignWriteRoles: options.campaignWriteRoles ?? [
      'ACCOUNT_BILLING_ADMIN',
      'ACCOUNT_MANAGER',
      'CAMPAIGN_MANAGER',
    ],
  };
  const double = await startDouble<LinkedInAccounts, LinkedInSettings>('linkedin', routes, {
    ...options,
    settings,
    before: ({ req }) => {
      const target = req.headers[RAW_TARGET_HEADER];
      if (target !== undefined) {
        rawTargets.set(req, target);
        delete req.headers[RAW_TARGET_HEADER];
      }
      return undefined;
    },
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
  captureRawTargets(double['server']);
  const state = stateOf(double);
  const controls: LinkedInCampaignControls = {
    campaignWrites: state.writes,
    budgetWrites: () =>
      state.writes
        .filter((w) => w.set['dailyBudget'] !== undefined)
        .map((w) => ({
          at: w.at,
          accountId: w.accountId,
          campaignId: w.campaignId,
          from: (w.previous['dailyBudget'] as LinkedInMoney | null | undefined) ?? null,
          to: w.set['dailyBudget'] as LinkedInMoney,
        })),
    throttleNext: (n, options = {}) => {
      double.faults.failNext(n, {
        status: 429,
        body: LINKEDIN_THROTTLE_BODY,
        headers: { 'x-restli-protocol-version': '2.0.0' },
        path: options.path ?? '/rest/',
      });
    },
  };
  return Object.assign(double, controls);
}

/**
 * URL decoding loses what a Rest.li server reads (an encoded `%28` is not a structural `(`), and the
 * recorded request keeps only the decoded query. For a `search` query sent with percent-encoding or
 * `+`, the raw target travels in a header that `before` removes from the recording. (A request
 * answered by an armed fault never reaches `before` and keeps that header in `double.requests`.)
 */
function captureRawTargets(server: Server): void {
  server.prependListener('request', (req: IncomingMessage) => {
    const target = req.url ?? '';
    const query = target.includes('?') ? target.slice(target.indexOf('?')) : '';
    if (/[?&]search=[^&]*[%+]/.test(query)) req.headers[RAW_TARGET_HEADER] = target;
    else delete req.headers[RAW_TARGET_HEADER];
  });
}
