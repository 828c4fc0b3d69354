/**
 * Reddit double: www.reddit.com/api/v1 (OAuth) and ads-api.reddit.com/api/v3 (Ads API) on one port.
 * See shared/providers.md §4.
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

export interface RedditAccounts {
  me: { id: string; username: string; [field: string]: unknown };
  businesses: RedditBusiness[];
  adAccounts: RedditAdAccount[];
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
}

export interface RedditDoubleOptions extends CommonDoubleOptions<RedditAccounts> {
  pageSize?: number;
  checkUserAgent?: boolean;
  blockedUserAgents?: string[];
  validScopes?: string[];
  pkce?: boolean;
}

export type RedditDouble = Double<RedditAccounts, RedditSettings>;

export const REDDIT_DEFAULT_CLIENT = {
  clientId: 'dOuBlErEdDiTiD',
  clientSecret: 'double-reddit-secret',
  redirectUris: ['http://localhost:8080/callback'],
};

export const REDDIT_DEFAULT_ACCOUNTS: RedditAccounts = {
  me: { id: 't2_abc', username: 'adops' },
  businesses: [{ id: 'biz_1', name: 'Acme' }],
  adAccounts: [
    { id: 'a2_xyz', name: 'Acme Reddit', currency: 'USD', business_id: 'biz_1' },
    { id: 'a2_uvw', name: 'Acme Reddit EU', currency: 'EUR', business_id: 'biz_1' },
  ],
};

/** A User-Agent a test can use that passes the rule. */
export const REDDIT_TEST_USER_AGENT = 'test:credvault-doubles:1.0 (by /u/credvault)';

const UNAUTHORIZED = json(401, { message: 'Unauthorized', error: 401 });
const TOO_MANY = json(429, { message: 'Too Many Requests', error: 429 });

function userAgentRule({ req, double }: { req: RecordedRequest; double: RedditDouble }): Reply | undefined {
  if (!double.settings.checkUserAgent) return undefined;
  const ua = (req.headers['user-agent'] ?? '').trim().toLowerCase();
  if (ua === '' || double.settings.blockedUserAgents.some((prefix) => ua.startsWith(prefix))) return TOO_MANY;
  return undefined;
}

// --- OAuth ------------------------------------------------------------------------------------------

function tokenError(kind: TokenErrorKind, _detail: string): Reply {
  if (kind === 'missing_parameter') return json(400, { error: 'invalid_request' });
  if (kind === 'unsupported_grant_type') return json(400, { error: 'unsupported_grant_type' });
  return json(400, { error: 'invalid_grant' });
}

/** HTTP Basic only (installed apps: empty password); a client_secret in the body is refused. */
function authenticateClient(req: RecordedRequest, double: RedditDouble): ClientAuth {
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

function checkAuthorize(q: URLSearchParams, double: RedditDouble): string | undefined {
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

const routes: RouteDef<RedditAccounts, RedditSettings>[] = [
  { method: 'GET', pattern: '/api/v3/me', handler: me },
  { method: 'GET', pattern: '/api/v3/me/businesses', handler: myBusinesses },
  { method: 'GET', pattern: '/api/v3/businesses/{id}/ad_accounts', handler: businessAdAccounts },
];

export async function startRedditDouble(options: RedditDoubleOptions = {}): Promise<RedditDouble> {
  const settings: RedditSettings = {
    pageSize: options.pageSize ?? 1,
    checkUserAgent: options.checkUserAgent ?? true,
    blockedUserAgents: options.blockedUserAgents ?? [...REDDIT_DEFAULT_BLOCKED_USER_AGENTS],
    validScopes: options.validScopes ?? [...REDDIT_SCOPES],
    pkce: options.pkce ?? false,
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
  return double;
}
