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

export interface GoogleAccounts {
  customers: GoogleCustomer[];
  /** Manager → client links (the account hierarchy). */
  links: Array<{ managerId: string; clientId: string; hidden?: boolean }>;
  /** Customers the user was granted directly (what listAccessibleCustomers returns). */
  accessible: string[];
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
  /** GAQL resources `googleAds:search` can query; add entries to extend (campaign, campaign_budget…). */
  gaqlResources: Map<string, GaqlResource>;
}

export interface GoogleDoubleOptions extends CommonDoubleOptions<GoogleAccounts> {
  minVersion?: number;
  requireDeveloperToken?: boolean;
  refreshTokenTtlSeconds?: number | null;
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
};

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
  return 'INTERNAL';
}

/** A Google Ads API error: the google.rpc.Status JSON with a GoogleAdsFailure detail. */
export function googleAdsFailure(
  status: number,
  version: string,
  errors: Array<{ errorCode: Record<string, string>; message: string }>,
): Reply {
  const message =
    status === 400
      ? 'Request contains an invalid argument.'
      : status === 403
        ? 'The caller does not have permission'
        : status === 401
          ? 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.'
          : 'Internal error encountered.';
  return json(status, {
    error: {
      code: status,
      message,
      status: statusName(status),
      details: [
        {
          '@type': `type.googleapis.com/google.ads.googleads.${version}.errors.GoogleAdsFailure`,
          errors,
          requestId: Math.random().toString(36).slice(2, 24),
        },
      ],
    },
  });
}

function unauthenticated(reason: string): Reply {
  const message =
    reason === 'missing'
      ? 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.'
      : 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';
  return json(
    401,
    { error: { code: 401, message, status: 'UNAUTHENTICATED' } },
    { 'www-authenticate': 'Bearer' },
  );
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

function getField(row: GaqlRow, field: string): unknown {
  const dot = field.indexOf('.');
  const resource = camel(field.slice(0, dot));
  const path = field
    .slice(dot + 1)
    .split('.')
    .map((p) => camel(p));
  let value: unknown = row[resource];
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function setField(out: GaqlRow, field: string, value: unknown): void {
  const dot = field.indexOf('.');
  const resource = camel(field.slice(0, dot));
  const path = field
    .slice(dot + 1)
    .split('.')
    .map((p) => camel(p));
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

/** Runs a GAQL query against the double's resources; returns the REST search answer body. */
export function runGaql(query: string, ctx: GaqlContext): Record<string, unknown> {
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

function defaultGaqlResources(): Map<string, GaqlResource> {
  return new Map<string, GaqlResource>([
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
  const versionError = checkVersion(double, params['version'] ?? '');
  if (versionError) return versionError;
  // Needs only the Bearer token: developer-token is optional, login-customer-id is ignored.
  const auth = double.authenticate(req);
  if (!auth.ok) return unauthenticated(auth.reason);
  return json(200, { resourceNames: auth.accounts.accessible.map((id) => `customers/${id}`) });
}

function search(ctx: Ctx, stream: boolean): Reply {
  const call = checkGoogleAdsCall(ctx);
  if ('status' in call) return call;
  const body = ctx.req.json;
  if (body === null || typeof body !== 'object' || typeof (body as { query?: unknown }).query !== 'string')
    return googleAdsFailure(400, call.version, [
      { errorCode: { queryError: 'PROHIBITED_EMPTY_LIST_IN_CONDITION' }, message: 'Missing query.' },
    ]);
  const request = body as { query: string; pageSize?: unknown };
  if (!stream && request.pageSize !== undefined)
    return googleAdsFailure(400, call.version, [
      {
        errorCode: { requestError: 'PAGE_SIZE_NOT_SUPPORTED' },
        message:
          "Setting the page size is not supported. Search Responses will have fixed page size of '10000' rows.",
      },
    ]);
  try {
    const answer = runGaql(request.query, { double: ctx.double, ...call });
    return stream
      ? json(200, [{ ...answer, requestId: Math.random().toString(36).slice(2) }])
      : json(200, answer);
  } catch (error) {
    if (error instanceof GaqlError)
      return googleAdsFailure(400, call.version, [{ errorCode: error.errorCode, message: error.message }]);
    throw error;
  }
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
];

export async function startGoogleDouble(options: GoogleDoubleOptions = {}): Promise<GoogleDouble> {
  const settings: GoogleSettings = {
    minVersion: options.minVersion ?? 23,
    requireDeveloperToken: options.requireDeveloperToken ?? false,
    consentedClients: new Set(),
    refreshTokenTtlSeconds: options.refreshTokenTtlSeconds ?? null,
    gaqlResources: defaultGaqlResources(),
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
        return body;
      },
      revoke,
    },
  });
}
