/**
 * In-process HTTP doubles of the ad platforms' OAuth servers and account APIs. One double per platform
 * serves the OAuth host and the API hosts on one loopback port, with the production paths, so a test
 * points credvault at `double.url` and nothing else changes. Facts and sources: shared/providers.md.
 *
 * This file is the platform-neutral part: the HTTP server and route table, request recording, fault
 * injection, registered clients, and the OAuth engine (authorization codes, grants, token store). Each
 * platform file describes its quirks with an `OAuthProfile` and adds its API routes.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Platform = 'google' | 'microsoft' | 'linkedin' | 'reddit';
export type ConsentMode = 'auto' | 'deny' | 'page';

/** One request as the double received it (recorded before any fault applies). */
export interface RecordedRequest {
  /** Date.now() when the request was complete. */
  at: number;
  method: string;
  path: string;
  query: URLSearchParams;
  /** Lowercased header names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  /** Raw body text ('' when there was none). */
  body: string;
  /** Parsed body when it was application/x-www-form-urlencoded. */
  form?: URLSearchParams;
  /** Parsed body when it was JSON (undefined when it did not parse). */
  json?: unknown;
  /** Decoded `Authorization: Basic` credentials, as sent (not form-decoded). */
  basic?: { user: string; pass: string };
}

/** What a route answers. `drop` destroys the socket without a response; `hang` never answers. */
export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  drop?: boolean;
  hang?: boolean;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body: JSON.stringify(body),
  };
}

export function html(status: number, body: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { 'content-type': 'text/html; charset=utf-8', ...headers }, body };
}

export function text(status: number, body: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers }, body };
}

export function empty(status: number, headers: Record<string, string> = {}): Reply {
  return { status, headers };
}

export function redirect(location: string, status = 302): Reply {
  return { status, headers: { location, 'content-type': 'text/html; charset=utf-8' }, body: '' };
}

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** Splits a scope parameter on spaces and commas (platforms differ), dropping empties. */
/**
 * An OpenID Connect ID token as a platform's token endpoint sends one when `openid` was granted:
 * its issuer is the platform's identity issuer, never the token endpoint's origin. Signed with a key
 * nobody can check here (a client that only wants the access token has no reason to).
 */
export function idToken(claims: { iss: string; aud: string; sub: string; [claim: string]: unknown }): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return [
    part({ alg: 'RS256', kid: 'double-signing-key', typ: 'JWT' }),
    part({ iat: now, exp: now + 3600, ...claims }),
    randomToken(64),
  ].join('.');
}

export function splitScope(scope: string): string[] {
  return scope.split(/[\s,]+/).filter((s) => s.length > 0);
}

export function pkceS256(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Redirect URI comparison. `loopbackPort`: 'exact' compares the whole string; 'any-if-unregistered'
 * accepts any port on an http loopback URI registered without a port (Google desktop clients);
 * 'ignored' ignores the port of any http loopback URI (Microsoft).
 */
export function redirectUriMatches(
  registered: string,
  requested: string,
  loopbackPort: 'exact' | 'any-if-unregistered' | 'ignored',
): boolean {
  if (registered === requested) return true;
  if (loopbackPort === 'exact') return false;
  let reg: URL;
  let req: URL;
  try {
    reg = new URL(registered);
    req = new URL(requested);
  } catch {
    return false;
  }
  if (reg.protocol !== 'http:' || req.protocol !== 'http:') return false;
  if (!LOOPBACK_HOSTS.has(reg.hostname) || reg.hostname !== req.hostname) return false;
  if (loopbackPort === 'any-if-unregistered' && reg.port !== '') return reg.href === req.href;
  return reg.pathname === req.pathname && reg.search === req.search && req.hash === '';
}

// ---------------------------------------------------------------------------------------------------
// Clients, codes, grants, tokens

export interface ClientRegistration {
  clientId: string;
  /** null or absent: the client has no secret. */
  clientSecret?: string | null;
  redirectUris: string[];
  /** A public (native) client; defaults to true when there is no secret. */
  public?: boolean;
}

export interface RegisteredClient {
  clientId: string;
  clientSecret: string | null;
  redirectUris: string[];
  public: boolean;
}

export interface AuthorizationRequest {
  id: string;
  clientId: string;
  redirectUri: string;
  scope: string[];
  state: string;
  codeChallenge: string | null;
  codeChallengeMethod: 'S256' | 'plain' | null;
  /** Every query parameter of the authorization request. */
  params: Record<string, string>;
}

export interface AuthorizationCode {
  code: string;
  clientId: string;
  redirectUri: string;
  scope: string[];
  codeChallenge: string | null;
  codeChallengeMethod: 'S256' | 'plain' | null;
  params: Record<string, string>;
  /** Decided at consent time by the profile (access_type=offline, duration=permanent, …). */
  withRefreshToken: boolean;
  issuedAt: number;
  expiresAt: number;
  usedAt: number | null;
  grantId: string | null;
}

export interface GrantRecord<A> {
  id: string;
  clientId: string;
  scope: string[];
  createdAt: number;
  /** Absolute end of the refresh token's life on the double's clock (null: no fixed end). */
  refreshExpiresAt: number | null;
  revoked: boolean;
  revokedReason: string | null;
  /** The authorization code the grant came from. */
  code: string | null;
  params: Record<string, string>;
  /** Account data seen through this grant; falls back to `double.accounts`. */
  accounts: A | undefined;
  refreshTokens: string[];
  accessTokens: string[];
}

export interface RefreshTokenRecord {
  token: string;
  grantId: string;
  issuedAt: number;
  lastUsedAt: number | null;
  /** Set when a rotation replaced this token. */
  supersededAt: number | null;
  revoked: boolean;
}

export interface AccessTokenRecord {
  token: string;
  grantId: string;
  clientId: string;
  scope: string[];
  issuedAt: number;
  expiresAt: number;
  revoked: boolean;
}

export interface IssuedGrant {
  grantId: string;
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

export interface IssueGrantOptions<A> {
  /** Defaults to the double's default client. */
  clientId?: string;
  scope: string | string[];
  accounts?: A;
  /** Absolute refresh-token end, in seconds from now (LinkedIn-style); default: the platform's. */
  refreshExpiresInSeconds?: number | null;
}

export type BearerCheck<A> =
  | { ok: true; access: AccessTokenRecord; grant: GrantRecord<A>; accounts: A }
  | { ok: false; reason: 'missing' | 'malformed' | 'unknown' | 'expired' | 'revoked' };

// ---------------------------------------------------------------------------------------------------
// Faults

export interface FaultSpec {
  status: number;
  /** A string is sent as is; anything else as JSON. Default: a JSON server_error body. */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface FaultScope {
  /** Path prefix the fault applies to; default: the token endpoint. '/' matches every route. */
  path?: string;
}

interface Armed<T> {
  remaining: number;
  path: string;
  value: T;
}

export class Faults {
  /** Delay before answering requests under `latencyPath`. */
  latencyMs = 0;
  /** Path prefix for `latencyMs`; default: the token endpoint. */
  latencyPath: string;
  private failures: Armed<FaultSpec>[] = [];
  private hangs: Armed<null>[] = [];
  private drops = 0;

  constructor(
    private readonly tokenPath: string,
    private readonly onInvalidate: (options: { accessTokens?: boolean }) => void,
  ) {
    this.latencyPath = tokenPath;
  }

  /** The next `n` matching requests are answered with `spec` and not processed. */
  failNext(n: number, spec: FaultSpec & FaultScope): this {
    const { path, ...value } = spec;
    this.failures.push({ remaining: n, path: path ?? this.tokenPath, value });
    return this;
  }

  /** The next `n` matching requests are accepted and never answered (until close). */
  hangNext(n: number, scope: FaultScope = {}): this {
    this.hangs.push({ remaining: n, path: scope.path ?? this.tokenPath, value: null });
    return this;
  }

  /**
   * The next `n` successful refresh grants are performed (tokens rotated, issued and recorded), then the
   * socket is destroyed without a response.
   */
  dropAfterRotate(n: number): this {
    this.drops += n;
    return this;
  }

  /** Every existing grant dies: refresh answers the platform's dead-grant error. */
  invalidateGrants(options: { accessTokens?: boolean } = {}): this {
    this.onInvalidate(options);
    return this;
  }

  /** Pending faults (for assertions that everything armed was consumed). */
  get pending(): { failures: number; hangs: number; drops: number } {
    const sum = (list: Armed<unknown>[]) => list.reduce((n, f) => n + f.remaining, 0);
    return { failures: sum(this.failures), hangs: sum(this.hangs), drops: this.drops };
  }

  reset(): void {
    this.failures = [];
    this.hangs = [];
    this.drops = 0;
    this.latencyMs = 0;
    this.latencyPath = this.tokenPath;
  }

  takeFailure(path: string): FaultSpec | undefined {
    return take(this.failures, path)?.value;
  }

  takeHang(path: string): boolean {
    return take(this.hangs, path) !== undefined;
  }

  takeDrop(): boolean {
    if (this.drops <= 0) return false;
    this.drops -= 1;
    return true;
  }
}

function take<T>(list: Armed<T>[], path: string): Armed<T> | undefined {
  const found = list.find((f) => f.remaining > 0 && path.startsWith(f.path));
  if (found) found.remaining -= 1;
  return found;
}

// ---------------------------------------------------------------------------------------------------
// Platform profile

export type AuthorizeErrorKind =
  | 'missing_client_id'
  | 'unknown_client'
  | 'missing_redirect_uri'
  | 'redirect_uri_mismatch'
  | 'unsupported_response_type'
  | 'missing_state'
  | 'missing_scope'
  | 'invalid_request'
  | 'unknown_consent_request';

export type TokenErrorKind =
  | 'missing_parameter'
  | 'unsupported_grant_type'
  | 'code_unknown'
  | 'code_reused'
  | 'code_expired'
  | 'code_client_mismatch'
  | 'code_redirect_mismatch'
  | 'pkce_missing'
  | 'pkce_mismatch'
  | 'refresh_dead'
  | 'refresh_expired'
  | 'refresh_reused'
  | 'refresh_client_mismatch';

export interface TokenIssue<A, S> {
  double: Double<A, S>;
  grant: GrantRecord<A>;
  access: AccessTokenRecord;
  /** The refresh token to put in the answer (absent: the answer has none). */
  refreshToken: string | undefined;
  grantType: 'authorization_code' | 'refresh_token';
}

export type ClientAuth = { client: RegisteredClient } | { reply: Reply };

export interface OAuthProfile<A, S> {
  authorizePath: string;
  tokenPath: string;
  /** Omitted: the platform has no revocation endpoint. */
  revokePath?: string;
  /** Where the consent page posts; default '/__double/consent'. */
  consentPath?: string;
  prefixes: { access: string; refresh: string; code: string };
  /** Bind `code_challenge` to codes and check `code_verifier`; false: PKCE parameters are ignored. */
  pkce: (double: Double<A, S>) => boolean;
  redirectMatches: (registered: string, requested: string) => boolean;
  /** Extra authorization-request checks; a string is shown on a 400 error page. */
  checkAuthorize?: (params: URLSearchParams, double: Double<A, S>) => string | undefined;
  normalizeScope?: (scope: string) => string[];
  authorizeError: (kind: AuthorizeErrorKind, detail: string) => Reply;
  /** Query parameters of the redirect when the user denies consent (state is added). */
  denyParams: (double: Double<A, S>) => Record<string, string>;
  /** Extra query parameters of the success redirect (code and state are added). */
  approveParams?: (request: AuthorizationRequest) => Record<string, string>;
  /** Called at consent; decides whether the code exchange returns a refresh token. */
  issuesRefreshToken: (request: AuthorizationRequest, double: Double<A, S>) => boolean;
  authenticateClient: (req: RecordedRequest, double: Double<A, S>) => ClientAuth;
  /** Default access-token lifetime when `double.accessTokenTtlSeconds` is unset. */
  accessTtlSeconds: (double: Double<A, S>) => number;
  /** Refresh-token lifetime at grant creation (null: none). */
  refreshTtlSeconds: (double: Double<A, S>) => number | null;
  /** 'rotate': each refresh returns a new refresh token; 'same': returns the one presented; 'none'. */
  refreshAnswer: 'rotate' | 'same' | 'none';
  /** Rotation only: re-presenting a replaced refresh token revokes the grant. */
  strictRotation?: (double: Double<A, S>) => boolean;
  /** Rotation only: each refresh moves the refresh expiry to now + refreshTtlSeconds. */
  slidingRefreshExpiry?: boolean;
  /**
   * A refresh token unused this long (seconds since it was issued or last used) is dead (Google's six
   * months, providers.md §1); null: never.
   */
  idleTtlSeconds?: (double: Double<A, S>) => number | null;
  /** Platform checks on a refresh request before the token is looked up. */
  beforeRefresh?: (req: RecordedRequest, double: Double<A, S>) => Reply | undefined;
  tokenError: (kind: TokenErrorKind, detail: string) => Reply;
  tokenResponse: (issue: TokenIssue<A, S>) => Record<string, unknown>;
  /** The revocation route's handler (only with revokePath). */
  revoke?: (ctx: RouteContext<A, S>) => Reply | Promise<Reply>;
}

// ---------------------------------------------------------------------------------------------------
// Routes

export interface RouteContext<A, S> {
  req: RecordedRequest;
  params: Record<string, string>;
  double: Double<A, S>;
}

export type RouteHandler<A, S> = (ctx: RouteContext<A, S>) => Reply | Promise<Reply>;

export interface RouteDef<A, S> {
  method: string;
  /**
   * '/{version}/customers/{cid}/googleAds:search' ({name} matches one segment or part of one), or a
   * RegExp.
   */
  pattern: string | RegExp;
  handler: RouteHandler<A, S>;
}

interface CompiledRoute<A, S> {
  method: string;
  regex: RegExp;
  handler: RouteHandler<A, S>;
}

export function compilePattern(pattern: string | RegExp): RegExp {
  if (pattern instanceof RegExp) return pattern;
  let source = '';
  for (const part of pattern.split(/(\{[A-Za-z_]\w*\})/)) {
    const param = /^\{([A-Za-z_]\w*)\}$/.exec(part);
    source += param ? `(?<${param[1]}>[^/]+)` : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

// ---------------------------------------------------------------------------------------------------
// The double

export interface CommonDoubleOptions<A> {
  /** Access-token lifetime in seconds; default: the platform's realistic value. */
  accessTokenTtlSeconds?: number;
  consent?: ConsentMode;
  /** Clients registered at start (in addition to the default client). */
  clients?: ClientRegistration[];
  /** Register `double.defaultClient` (default true). */
  defaultClient?: boolean;
  /** Replaces the platform's default account data. */
  accounts?: A;
  /** Authorization-code lifetime (default 300 s). */
  codeTtlSeconds?: number;
}

export interface DoubleOptions<A, S> extends CommonDoubleOptions<A> {
  oauth: OAuthProfile<A, S>;
  settings: S;
  /** The platform's default account data (used when options.accounts is absent). */
  defaultAccounts: A;
  /** The client registered as `double.defaultClient`. */
  defaultClientRegistration: ClientRegistration;
  /** Runs before routing (after faults), e.g. Reddit's User-Agent rule. */
  before?: (ctx: { req: RecordedRequest; double: Double<A, S> }) => Reply | undefined;
  /** Answer for unknown paths (default: 404 JSON). */
  notFound?: (req: RecordedRequest) => Reply;
}

export class Double<A = unknown, S = unknown> {
  readonly platform: Platform;
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url = '';
  readonly requests: RecordedRequest[] = [];
  readonly faults: Faults;
  readonly clients = new Map<string, RegisteredClient>();
  readonly defaultClient: RegisteredClient | null;
  /** Mutable account data, served to every grant that has no accounts of its own. */
  accounts: A;
  /** Mutable platform settings (see each platform's *Settings type). */
  settings: S;
  consent: ConsentMode;
  /** Access-token lifetime for new tokens (undefined: platform default). */
  accessTokenTtlSeconds: number | undefined;
  codeTtlSeconds: number;
  readonly oauth: OAuthProfile<A, S>;

  readonly codes = new Map<string, AuthorizationCode>();
  readonly grants = new Map<string, GrantRecord<A>>();
  readonly refreshTokens = new Map<string, RefreshTokenRecord>();
  readonly accessTokens = new Map<string, AccessTokenRecord>();
  readonly pendingConsents = new Map<string, AuthorizationRequest>();

  /** Refresh grants that issued tokens (including those whose answer was dropped). */
  refreshCount = 0;
  /** Authorization codes successfully exchanged. */
  codeExchangeCount = 0;
  /** Successful revocations. */
  revokeCount = 0;

  private clockOffsetMs = 0;
  private readonly routes: CompiledRoute<A, S>[] = [];
  private readonly server = createServer((req, res) => void this.handle(req, res));
  private readonly sockets = new Set<Socket>();
  private readonly before: DoubleOptions<A, S>['before'];
  private readonly notFound: (req: RecordedRequest) => Reply;

  constructor(platform: Platform, routes: RouteDef<A, S>[], options: DoubleOptions<A, S>) {
    this.platform = platform;
    this.oauth = options.oauth;
    this.settings = options.settings;
    this.accounts = options.accounts ?? options.defaultAccounts;
    this.consent = options.consent ?? 'auto';
    this.accessTokenTtlSeconds = options.accessTokenTtlSeconds;
    this.codeTtlSeconds = options.codeTtlSeconds ?? 300;
    this.before = options.before;
    this.notFound = options.notFound ?? (() => json(404, { error: 'not_found' }));
    this.faults = new Faults(options.oauth.tokenPath, (o) => this.invalidateGrants(o));
    this.defaultClient =
      options.defaultClient === false ? null : this.registerClient(options.defaultClientRegistration);
    for (const client of options.clients ?? []) this.registerClient(client);
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    for (const route of oauthRoutes(this.oauth)) this.route(route.method, route.pattern, route.handler);
    for (const route of routes) this.route(route.method, route.pattern, route.handler);
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this;
  }

  /** Stops the server and destroys every open connection (hung requests included). */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Absolute URLs of the OAuth endpoints on this double. */
  get endpoints(): { authorize: string; token: string; revoke: string | null; base: string } {
    return {
      base: this.url,
      authorize: this.url + this.oauth.authorizePath,
      token: this.url + this.oauth.tokenPath,
      revoke: this.oauth.revokePath ? this.url + this.oauth.revokePath : null,
    };
  }

  /** Adds a route; routes added later win over earlier ones with the same method and path. */
  route(method: string, pattern: string | RegExp, handler: RouteHandler<A, S>): this {
    this.routes.unshift({ method: method.toUpperCase(), regex: compilePattern(pattern), handler });
    return this;
  }

  registerClient(registration: ClientRegistration): RegisteredClient {
    const clientSecret = registration.clientSecret ?? null;
    const client: RegisteredClient = {
      clientId: registration.clientId,
      clientSecret,
      redirectUris: [...registration.redirectUris],
      public: registration.public ?? clientSecret === null,
    };
    this.clients.set(client.clientId, client);
    return client;
  }

  // --- clock ---------------------------------------------------------------------------------------

  /** The double's clock (ms): Date.now() plus whatever `advanceClock` added. */
  now(): number {
    return Date.now() + this.clockOffsetMs;
  }

  /** Moves the double's clock forward (token and code expiry use it; `requests[].at` does not). */
  advanceClock(ms: number): void {
    this.clockOffsetMs += ms;
  }

  // --- requests ------------------------------------------------------------------------------------

  requestsTo(pathPrefix: string, method?: string): RecordedRequest[] {
    return this.requests.filter(
      (r) => r.path.startsWith(pathPrefix) && (method === undefined || r.method === method.toUpperCase()),
    );
  }

  /** Token-endpoint requests with grant_type=refresh_token (including faulted ones). */
  get refreshAttempts(): number {
    return this.tokenRequests('refresh_token').length;
  }

  /** Token-endpoint requests with grant_type=authorization_code (including faulted ones). */
  get codeExchangeAttempts(): number {
    return this.tokenRequests('authorization_code').length;
  }

  tokenRequests(grantType?: string): RecordedRequest[] {
    return this.requestsTo(this.oauth.tokenPath, 'POST').filter(
      (r) => grantType === undefined || r.form?.get('grant_type') === grantType,
    );
  }

  // --- grants and tokens ---------------------------------------------------------------------------

  /** Mints a grant directly (as if the user had consented), e.g. to adopt an existing refresh token. */
  issueGrant(options: IssueGrantOptions<A>): IssuedGrant {
    const clientId = options.clientId ?? this.defaultClient?.clientId;
    if (clientId === undefined || !this.clients.has(clientId))
      throw new Error(`issueGrant: client ${clientId ?? '(none)'} is not registered`);
    const scope = Array.isArray(options.scope) ? options.scope : this.normalizeScope(options.scope);
    const grant = this.createGrant({ clientId, scope, code: null, params: {}, accounts: options.accounts });
    if (options.refreshExpiresInSeconds !== undefined)
      grant.refreshExpiresAt =
        options.refreshExpiresInSeconds === null ? null : this.now() + options.refreshExpiresInSeconds * 1000;
    const access = this.issueAccessToken(grant);
    const refreshToken = this.issueRefreshToken(grant);
    return {
      grantId: grant.id,
      accessToken: access.token,
      refreshToken,
      expiresIn: Math.round((access.expiresAt - access.issuedAt) / 1000),
    };
  }

  createGrant(input: {
    clientId: string;
    scope: string[];
    code: string | null;
    params: Record<string, string>;
    accounts: A | undefined;
  }): GrantRecord<A> {
    const ttl = this.oauth.refreshTtlSeconds(this);
    const grant: GrantRecord<A> = {
      id: randomUUID(),
      clientId: input.clientId,
      scope: input.scope,
      createdAt: this.now(),
      refreshExpiresAt: ttl === null ? null : this.now() + ttl * 1000,
      revoked: false,
      revokedReason: null,
      code: input.code,
      params: input.params,
      accounts: input.accounts,
      refreshTokens: [],
      accessTokens: [],
    };
    this.grants.set(grant.id, grant);
    return grant;
  }

  issueAccessToken(grant: GrantRecord<A>, ttlSeconds?: number): AccessTokenRecord {
    const ttl = ttlSeconds ?? this.accessTokenTtlSeconds ?? this.oauth.accessTtlSeconds(this);
    const now = this.now();
    const record: AccessTokenRecord = {
      token: this.oauth.prefixes.access + randomToken(),
      grantId: grant.id,
      clientId: grant.clientId,
      scope: grant.scope,
      issuedAt: now,
      expiresAt: now + ttl * 1000,
      revoked: false,
    };
    this.accessTokens.set(record.token, record);
    grant.accessTokens.push(record.token);
    return record;
  }

  issueRefreshToken(grant: GrantRecord<A>): string {
    const record: RefreshTokenRecord = {
      token: this.oauth.prefixes.refresh + randomToken(),
      grantId: grant.id,
      issuedAt: this.now(),
      lastUsedAt: null,
      supersededAt: null,
      revoked: false,
    };
    this.refreshTokens.set(record.token, record);
    grant.refreshTokens.push(record.token);
    return record.token;
  }

  /** The grant behind an access or refresh token, or by grant id. */
  findGrant(tokenOrId: string): GrantRecord<A> | undefined {
    const id =
      this.refreshTokens.get(tokenOrId)?.grantId ?? this.accessTokens.get(tokenOrId)?.grantId ?? tokenOrId;
    return this.grants.get(id);
  }

  /** Kills a grant: its refresh tokens and (by default) its access tokens. */
  revokeGrant(tokenOrId: string, reason = 'revoked', options: { accessTokens?: boolean } = {}): boolean {
    const grant = this.findGrant(tokenOrId);
    if (!grant) return false;
    grant.revoked = true;
    grant.revokedReason = reason;
    for (const token of grant.refreshTokens) {
      const record = this.refreshTokens.get(token);
      if (record) record.revoked = true;
    }
    if (options.accessTokens ?? true) {
      for (const token of grant.accessTokens) {
        const record = this.accessTokens.get(token);
        if (record) record.revoked = true;
      }
    }
    return true;
  }

  /** Every existing grant dies (refresh answers the dead-grant error); access tokens too if asked. */
  invalidateGrants(options: { accessTokens?: boolean } = {}): void {
    for (const grant of this.grants.values())
      this.revokeGrant(grant.id, 'invalidated', { accessTokens: options.accessTokens ?? false });
  }

  /** Every access token issued so far is expired (refresh tokens untouched). */
  expireAccessTokens(): void {
    const now = this.now();
    for (const record of this.accessTokens.values()) record.expiresAt = Math.min(record.expiresAt, now - 1);
  }

  /** Sets the absolute end of a grant's refresh-token life (LinkedIn: a token near its end). */
  setRefreshExpiry(tokenOrId: string, secondsFromNow: number | null): void {
    const grant = this.findGrant(tokenOrId);
    if (!grant) throw new Error('setRefreshExpiry: unknown token or grant');
    grant.refreshExpiresAt = secondsFromNow === null ? null : this.now() + secondsFromNow * 1000;
  }

  /** Checks `Authorization: Bearer …` against the token store. */
  authenticate(req: RecordedRequest): BearerCheck<A> {
    const header = req.headers['authorization'];
    if (header === undefined || header === '') return { ok: false, reason: 'missing' };
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match?.[1]) return { ok: false, reason: 'malformed' };
    const access = this.accessTokens.get(match[1]);
    const grant = access ? this.grants.get(access.grantId) : undefined;
    if (!access || !grant) return { ok: false, reason: 'unknown' };
    if (access.revoked) return { ok: false, reason: 'revoked' };
    if (this.now() >= access.expiresAt) return { ok: false, reason: 'expired' };
    return { ok: true, access, grant, accounts: grant.accounts ?? this.accounts };
  }

  normalizeScope(scope: string): string[] {
    return this.oauth.normalizeScope ? this.oauth.normalizeScope(scope) : splitScope(scope);
  }

  // --- HTTP ----------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let recorded: RecordedRequest;
    try {
      recorded = await record(req);
    } catch {
      res.destroy();
      return;
    }
    this.requests.push(recorded);
    try {
      const reply = await this.dispatch(recorded);
      send(res, reply);
    } catch (error) {
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      send(res, json(500, { error: 'double_internal_error', message }));
    }
  }

  private async dispatch(req: RecordedRequest): Promise<Reply> {
    const { faults } = this;
    if (faults.latencyMs > 0 && req.path.startsWith(faults.latencyPath))
      await new Promise((resolve) => setTimeout(resolve, faults.latencyMs));
    if (faults.takeHang(req.path)) return { status: 0, hang: true };
    const failure = faults.takeFailure(req.path);
    if (failure) {
      const body =
        failure.body === undefined
          ? { error: 'server_error', error_description: `Injected fault (HTTP ${failure.status})` }
          : failure.body;
      return typeof body === 'string'
        ? text(failure.status, body, failure.headers)
        : json(failure.status, body, failure.headers);
    }
    const early = this.before?.({ req, double: this });
    if (early) return early;
    let allowed: string[] = [];
    for (const route of this.routes) {
      const match = route.regex.exec(req.path);
      if (!match) continue;
      if (route.method !== req.method) {
        allowed = [...allowed, route.method];
        continue;
      }
      const params: Record<string, string> = {};
      for (const [key, value] of Object.entries(match.groups ?? {})) params[key] = safeDecode(value);
      return route.handler({ req, params, double: this });
    }
    if (allowed.length > 0) {
      const reply = this.notFound(req);
      return { ...reply, status: 405, headers: { ...reply.headers, allow: allowed.join(', ') } };
    }
    return this.notFound(req);
  }
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

async function record(req: IncomingMessage): Promise<RecordedRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > 5 * 1024 * 1024) throw new Error('body too large');
    chunks.push(buffer);
  }
  const body = Buffer.concat(chunks).toString('utf8');
  const url = new URL(req.url ?? '/', 'http://double.invalid');
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  const recorded: RecordedRequest = {
    at: Date.now(),
    method: (req.method ?? 'GET').toUpperCase(),
    path: url.pathname,
    query: url.searchParams,
    headers,
    body,
  };
  const type = (headers['content-type'] ?? '').toLowerCase();
  if (type.startsWith('application/x-www-form-urlencoded')) recorded.form = new URLSearchParams(body);
  else if (type.includes('json') && body !== '') {
    try {
      recorded.json = JSON.parse(body);
    } catch {
      recorded.json = undefined;
    }
  }
  const auth = headers['authorization'];
  const basic = auth === undefined ? null : /^Basic\s+(\S+)\s*$/i.exec(auth);
  if (basic?.[1]) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    recorded.basic =
      colon === -1
        ? { user: decoded, pass: '' }
        : { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
  }
  return recorded;
}

function send(res: ServerResponse, reply: Reply): void {
  if (reply.hang) return;
  if (reply.drop) {
    res.socket?.destroy();
    return;
  }
  res.writeHead(reply.status, { 'cache-control': 'no-store', ...reply.headers });
  res.end(reply.body ?? '');
}

/** True when a Basic credential or a form value equals `expected`, raw or form-urlencoding-decoded. */
export function credentialEquals(sent: string | null | undefined, expected: string | null): boolean {
  if (sent === null || sent === undefined || expected === null) return false;
  if (sent === expected) return true;
  try {
    return decodeURIComponent(sent.replace(/\+/g, ' ')) === expected;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// OAuth engine

function oauthRoutes<A, S>(profile: OAuthProfile<A, S>): RouteDef<A, S>[] {
  const routes: RouteDef<A, S>[] = [
    { method: 'GET', pattern: profile.authorizePath, handler: authorizeHandler },
    { method: 'POST', pattern: profile.consentPath ?? '/__double/consent', handler: consentDecision },
    { method: 'POST', pattern: profile.tokenPath, handler: token },
  ];
  if (profile.revokePath && profile.revoke)
    routes.push({ method: 'POST', pattern: profile.revokePath, handler: profile.revoke });
  return routes;
}

/** The authorization endpoint (exported so a platform can serve it on an alias path). */
export function authorizeHandler<A, S>({ req, double }: RouteContext<A, S>): Reply {
  const profile = double.oauth;
  const q = req.query;
  const clientId = q.get('client_id');
  if (!clientId) return profile.authorizeError('missing_client_id', 'Missing required parameter: client_id');
  const client = double.clients.get(clientId);
  if (!client) return profile.authorizeError('unknown_client', `The OAuth client was not found: ${clientId}`);
  const redirectUri = q.get('redirect_uri');
  if (!redirectUri)
    return profile.authorizeError('missing_redirect_uri', 'Missing required parameter: redirect_uri');
  if (!client.redirectUris.some((registered) => profile.redirectMatches(registered, redirectUri)))
    return profile.authorizeError(
      'redirect_uri_mismatch',
      `The redirect_uri ${redirectUri} does not match a registered redirect URI`,
    );
  const responseType = q.get('response_type');
  if (responseType !== 'code')
    return profile.authorizeError(
      'unsupported_response_type',
      responseType
        ? `Unsupported response_type: ${responseType}`
        : 'Missing required parameter: response_type',
    );
  const state = q.get('state');
  if (state === null || state === '')
    return profile.authorizeError('missing_state', 'Missing required parameter: state');
  const scopeParam = q.get('scope');
  const scope = scopeParam === null ? [] : double.normalizeScope(scopeParam);
  if (scope.length === 0) return profile.authorizeError('missing_scope', 'Missing required parameter: scope');
  let codeChallenge: string | null = null;
  let codeChallengeMethod: 'S256' | 'plain' | null = null;
  if (profile.pkce(double) && q.get('code_challenge')) {
    codeChallenge = q.get('code_challenge');
    const method = q.get('code_challenge_method') ?? 'plain';
    if (method !== 'S256' && method !== 'plain')
      return profile.authorizeError('invalid_request', `Unsupported code_challenge_method: ${method}`);
    codeChallengeMethod = method;
    if (codeChallenge === null || !/^[A-Za-z0-9\-._~]{43,128}$/.test(codeChallenge))
      return profile.authorizeError('invalid_request', 'Invalid code_challenge');
  }
  const extra = profile.checkAuthorize?.(q, double);
  if (extra) return profile.authorizeError('invalid_request', extra);
  const request: AuthorizationRequest = {
    id: randomToken(16),
    clientId,
    redirectUri,
    scope,
    state,
    codeChallenge,
    codeChallengeMethod,
    params: Object.fromEntries(q),
  };
  if (double.consent === 'deny') return deny(double, request);
  if (double.consent === 'auto') return approve(double, request);
  double.pendingConsents.set(request.id, request);
  return html(200, consentPage(double, request));
}

function consentPage<A, S>(double: Double<A, S>, request: AuthorizationRequest): string {
  const action = double.oauth.consentPath ?? '/__double/consent';
  return [
    '<!doctype html>',
    `<html><head><meta charset="utf-8"><title>Consent (${double.platform} double)</title></head><body>`,
    `<h1>${escapeHtml(request.clientId)} wants access to your ${double.platform} account</h1>`,
    `<ul>${request.scope.map((s) => `<li>${escapeHtml(s)}</li>`).join('')}</ul>`,
    `<form method="post" action="${escapeHtml(action)}">`,
    `<input type="hidden" name="request" value="${escapeHtml(request.id)}">`,
    '<button type="submit" id="allow" name="decision" value="allow">Allow</button>',
    '<button type="submit" id="deny" name="decision" value="deny">Deny</button>',
    '</form></body></html>',
  ].join('\n');
}

function consentDecision<A, S>({ req, double }: RouteContext<A, S>): Reply {
  const id = req.form?.get('request') ?? '';
  const request = double.pendingConsents.get(id);
  if (!request)
    return double.oauth.authorizeError('unknown_consent_request', 'Unknown or used consent request');
  double.pendingConsents.delete(id);
  return req.form?.get('decision') === 'allow' ? approve(double, request) : deny(double, request);
}

function redirectTo(uri: string, params: Record<string, string>): Reply {
  const url = new URL(uri);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return redirect(url.toString());
}

function approve<A, S>(double: Double<A, S>, request: AuthorizationRequest): Reply {
  const now = double.now();
  const code: AuthorizationCode = {
    code: double.oauth.prefixes.code + randomToken(),
    clientId: request.clientId,
    redirectUri: request.redirectUri,
    scope: request.scope,
    codeChallenge: request.codeChallenge,
    codeChallengeMethod: request.codeChallengeMethod,
    params: request.params,
    withRefreshToken: double.oauth.issuesRefreshToken(request, double),
    issuedAt: now,
    expiresAt: now + double.codeTtlSeconds * 1000,
    usedAt: null,
    grantId: null,
  };
  double.codes.set(code.code, code);
  return redirectTo(request.redirectUri, {
    code: code.code,
    state: request.state,
    ...double.oauth.approveParams?.(request),
  });
}

function deny<A, S>(double: Double<A, S>, request: AuthorizationRequest): Reply {
  return redirectTo(request.redirectUri, { ...double.oauth.denyParams(double), state: request.state });
}

function token<A, S>({ req, double }: RouteContext<A, S>): Reply {
  const profile = double.oauth;
  const form = req.form ?? new URLSearchParams();
  const auth = profile.authenticateClient(req, double);
  if ('reply' in auth) return auth.reply;
  const grantType = form.get('grant_type');
  if (!grantType) return profile.tokenError('missing_parameter', 'grant_type');
  if (grantType === 'authorization_code') return exchangeCode(double, form, auth.client);
  if (grantType === 'refresh_token') return refresh(double, req, form, auth.client);
  return profile.tokenError('unsupported_grant_type', grantType);
}

function exchangeCode<A, S>(double: Double<A, S>, form: URLSearchParams, client: RegisteredClient): Reply {
  const profile = double.oauth;
  const value = form.get('code');
  if (!value) return profile.tokenError('missing_parameter', 'code');
  const code = double.codes.get(value);
  if (!code) return profile.tokenError('code_unknown', 'unknown authorization code');
  if (code.usedAt !== null) {
    // RFC 6749 §4.1.2: a reused code should revoke every token issued from it.
    if (code.grantId) double.revokeGrant(code.grantId, 'code reused');
    return profile.tokenError('code_reused', 'authorization code already used');
  }
  if (double.now() >= code.expiresAt) return profile.tokenError('code_expired', 'authorization code expired');
  if (code.clientId !== client.clientId)
    return profile.tokenError('code_client_mismatch', 'code was issued to another client');
  const redirectUri = form.get('redirect_uri');
  if (redirectUri === null) return profile.tokenError('missing_parameter', 'redirect_uri');
  if (redirectUri !== code.redirectUri)
    return profile.tokenError(
      'code_redirect_mismatch',
      'redirect_uri differs from the authorization request',
    );
  if (profile.pkce(double) && code.codeChallenge !== null) {
    const verifier = form.get('code_verifier');
    if (!verifier) return profile.tokenError('pkce_missing', 'code_verifier');
    const computed = code.codeChallengeMethod === 'S256' ? pkceS256(verifier) : verifier;
    if (computed !== code.codeChallenge) return profile.tokenError('pkce_mismatch', 'code_verifier');
  }
  code.usedAt = double.now();
  const grant = double.createGrant({
    clientId: client.clientId,
    scope: code.scope,
    code: code.code,
    params: code.params,
    accounts: undefined,
  });
  code.grantId = grant.id;
  const access = double.issueAccessToken(grant);
  const refreshToken = code.withRefreshToken ? double.issueRefreshToken(grant) : undefined;
  double.codeExchangeCount += 1;
  const body = profile.tokenResponse({
    double,
    grant,
    access,
    refreshToken,
    grantType: 'authorization_code',
  });
  return json(200, body);
}

function refresh<A, S>(
  double: Double<A, S>,
  req: RecordedRequest,
  form: URLSearchParams,
  client: RegisteredClient,
): Reply {
  const profile = double.oauth;
  const presented = form.get('refresh_token');
  if (!presented) return profile.tokenError('missing_parameter', 'refresh_token');
  const early = profile.beforeRefresh?.(req, double);
  if (early) return early;
  const record = double.refreshTokens.get(presented);
  const grant = record ? double.grants.get(record.grantId) : undefined;
  if (!record || !grant || grant.revoked || record.revoked)
    return profile.tokenError('refresh_dead', 'refresh token unknown or revoked');
  if (grant.clientId !== client.clientId)
    return profile.tokenError('refresh_client_mismatch', 'refresh token belongs to another client');
  const now = double.now();
  if (grant.refreshExpiresAt !== null && now >= grant.refreshExpiresAt)
    return profile.tokenError('refresh_expired', 'refresh token expired');
  const idle = profile.idleTtlSeconds?.(double) ?? null;
  if (idle !== null && now - (record.lastUsedAt ?? record.issuedAt) >= idle * 1000)
    return profile.tokenError('refresh_expired', 'refresh token unused for too long');
  if (
    profile.refreshAnswer === 'rotate' &&
    record.supersededAt !== null &&
    profile.strictRotation?.(double)
  ) {
    double.revokeGrant(grant.id, 'rotated refresh token reused');
    return profile.tokenError('refresh_reused', 'refresh token already used');
  }
  const access = double.issueAccessToken(grant);
  let refreshToken: string | undefined;
  if (profile.refreshAnswer === 'rotate') {
    refreshToken = double.issueRefreshToken(grant);
    if (record.supersededAt === null) record.supersededAt = now;
    if (profile.slidingRefreshExpiry) {
      const ttl = profile.refreshTtlSeconds(double);
      grant.refreshExpiresAt = ttl === null ? null : now + ttl * 1000;
    }
  } else if (profile.refreshAnswer === 'same') {
    refreshToken = presented;
  }
  record.lastUsedAt = now;
  double.refreshCount += 1;
  if (double.faults.takeDrop()) return { status: 0, drop: true };
  return json(
    200,
    profile.tokenResponse({ double, grant, access, refreshToken, grantType: 'refresh_token' }),
  );
}

/**
 * Revokes an access or refresh token. A refresh token kills its grant; an access token kills only
 * itself unless `accessKillsGrant`. Returns what the token was (null: unknown).
 */
export function revokeToken<A, S>(
  double: Double<A, S>,
  value: string,
  accessKillsGrant: boolean,
): 'refresh' | 'access' | null {
  const refreshRecord = double.refreshTokens.get(value);
  if (refreshRecord) {
    double.revokeGrant(refreshRecord.grantId, 'revoked by client');
    double.revokeCount += 1;
    return 'refresh';
  }
  const access = double.accessTokens.get(value);
  if (access) {
    if (accessKillsGrant) double.revokeGrant(access.grantId, 'revoked by client');
    else access.revoked = true;
    double.revokeCount += 1;
    return 'access';
  }
  return null;
}

/** Creates a double and starts it on 127.0.0.1 with an ephemeral port. */
export async function startDouble<A, S>(
  platform: Platform,
  routes: RouteDef<A, S>[],
  options: DoubleOptions<A, S>,
): Promise<Double<A, S>> {
  return new Double<A, S>(platform, routes, options).listen();
}

/** Structured-clone helper for default account data, so each double gets its own copy. */
export function clone<T>(value: T): T {
  return structuredClone(value);
}
