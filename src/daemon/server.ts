import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Duplex } from 'node:stream';
import { MAX_MIN_TTL_SECONDS } from '../config.js';
import { keySourceLabel } from '../crypto/key-sources.js';
import { databaseFailure, errorMessage, mapDatabaseError } from '../db/errors.js';
import type { ClientRow } from '../db/store/clients.js';
import type { ConnectionRow } from '../db/store/connections.js';
import { CredvaultError, NotFoundError, UnavailableError } from '../errors.js';
import type { AuditEntry } from '../services/audit.js';
import { authenticateClient, hashClientToken, isLiveClient, sameHash } from '../services/clients.js';
import { resolveConnection } from '../services/connections.js';
import type { ServiceContext } from '../services/context.js';
import { openToken } from '../services/grants.js';
import { freshGrant, refusalEntry, refusedServe } from '../services/tokens.js';
import { HTML_PAGE_HEADERS } from '../util/html.js';
import { isLoopbackHost } from '../util/net.js';
import { tokenDocument } from '../views.js';
import {
  ApiError,
  authorizeRoute,
  inScope,
  matchCallback,
  matchRoute,
  openApiDocument,
  type Route,
  runRoute,
  visibleConnections,
} from './admin.js';
import type { AuditBatcher } from './audit-batcher.js';
import type { CachedToken, DaemonCache } from './cache.js';
import { callbackPage } from './callback.js';
import { type Logger, RepeatedLines } from './log.js';
import type { DaemonMetrics } from './metrics.js';
import type { DaemonOptions } from './options.js';

/**
 * The daemon's HTTP endpoint, built without knowing about ports or signals (main.ts listens and
 * stops it). Every answer carries Cache-Control: no-store and no CORS header; a request with an Origin
 * header, or a Host that is not loopback (or --allowed-host), is refused before anything else.
 */

export interface Health {
  ok: boolean;
  reasons: string[];
  lastSweepAt: Date | null;
  shuttingDown: boolean;
  /**
   * Whether tokens and clients are served from memory: the daemon knows it hears every change (see
   * listenForChanges). False while they are read from the database at every request.
   */
  listening: boolean;
}

export interface ServerDeps {
  ctx: ServiceContext;
  cache: DaemonCache;
  audit: AuditBatcher;
  metrics: DaemonMetrics;
  log: Logger;
  options: DaemonOptions;
  health(): Promise<Health>;
  /**
   * True once SIGTERM came: while the daemon drains, /healthz says so (503), an OAuth callback still
   * completes its sign-in, and everything else is refused (503).
   */
  shuttingDown(): boolean;
  /** The local CLI's credential (read from the 0600 run file), for `token get`'s fast path. */
  localToken: string | null;
}

const LOCAL_CLIENT_ID = '00000000-0000-0000-0000-000000000000';

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  // A request answered before its body was all read (refused on its token, say): the rest of it is
  // not read, so the connection ends with this answer, the request's one (kept alive, it would be
  // left waiting for a body the daemon never reads, and then answered a second time: 408).
  if (!res.req.complete) {
    headers = { ...headers, connection: 'close' };
    answered.add(res.req.socket);
  }
  res.writeHead(status, {
    'content-type':
      typeof body === 'string' ? 'text/plain; version=0.0.4; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

/**
 * Sockets whose request was answered before its body was all read (see send): the connection ends
 * with that answer, and nothing more is written on it (not the 408 of a body that never came).
 */
const answered = new WeakSet<Duplex>();

/** An error answered on the bare socket (Node gave no response object), then the connection closed. */
function answerOnSocket(
  socket: Duplex,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  const body = JSON.stringify({ error: { code, message } });
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `cache-control: no-store\r\nx-content-type-options: nosniff\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

/** An IPv6 literal without its brackets (`[fd00::1]` is `fd00::1`); any other name as it is. */
function unbracketed(name: string): string {
  return /^\[[^\]]+\]$/.test(name) ? name.slice(1, -1) : name;
}

/** Whether `host` (the request's, lowercase: see hostOf) is loopback or one of --allowed-host's. */
function hostAllowed(host: string, allowed: string[]): boolean {
  // An IPv6 literal is the whole of it, with a port at most (`[::1]evil.com` is not `[::1]`).
  if (host.startsWith('[') && !/^\[[^\]]+\](:\d+)?$/.test(host)) return false;
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  // `--allowed-host '[fd00::1]'` is the host `fd00::1`, with any port as `--allowed-host fd00::1` is.
  return (
    name !== '' &&
    (isLoopbackHost(name) || allowed.some((entry) => unbracketed(entry) === name) || allowed.includes(host))
  );
}

/** The client token a request carries (`Authorization: Bearer …`; the scheme in any case, RFC 9110 §11.1). */
function bearerToken(req: IncomingMessage): string | null {
  return /^Bearer +([A-Za-z0-9_-]{1,200})$/i.exec(req.headers.authorization ?? '')?.[1] ?? null;
}

/**
 * The host a request is for, lowercase: its one Host header, or the authority of an absolute-form
 * request target (`GET http://evil.example/…`), which RFC 9112 §3.2.2 says is the one that counts
 * (the Host header is then ignored). More than one Host header is a bad request (RFC 9112 §3.2: 400),
 * whichever comes first (Node keeps the first and drops the others).
 */
function hostOf(req: IncomingMessage): string {
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts += 1;
  if (hosts > 1) throw new ApiError(400, 'invalid_input', 'the request has more than one Host header');
  const target = req.url ?? '/';
  if (target.startsWith('/')) return (req.headers.host ?? '').toLowerCase();
  let url: URL | null = null;
  try {
    url = new URL(target);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.host)
    throw new ApiError(400, 'invalid_input', 'the request target is not a path or an http URL');
  return url.host.toLowerCase();
}

/**
 * The path and query of a request target, taken as the client wrote them: an origin-form target is a
 * path (RFC 9112 §3.2.1), never a URL to resolve (`//evil.example/v1/connections` is not a host, and
 * `/a/%2e%2e/b` is not `/b`), and the path is routed on exactly as written. An absolute-form target's
 * (`http://localhost/…`; its authority is checked by hostOf) is the part after its authority. A target
 * that is not a clean path is refused with 400 whatever route it would name, before the client token
 * is looked at: one that does not start with a single `/` (`//…`, `*`), or holds `\`, a fragment, an
 * empty segment (`//`) or a dot-segment (`.` or `..`, literally or percent-encoded). What a URL parser
 * would make of such a path is exactly what a route must not be matched on.
 */
function targetOf(req: IncomingMessage): { path: string; url: URL } {
  const target = req.url ?? '/';
  const refuse = (): never => {
    throw new ApiError(400, 'invalid_input', 'the request target is not a plain path (RFC 9112 §3.2.1)');
  };
  // An absolute-form target: what follows its authority (hostOf has checked the scheme and the host).
  const origin = target.startsWith('/') ? target : target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '');
  const queryAt = origin.indexOf('?');
  const path = queryAt < 0 ? origin : origin.slice(0, queryAt);
  const query = queryAt < 0 ? '' : origin.slice(queryAt);
  if (!path.startsWith('/') || /[\\#]/.test(origin)) refuse();
  const segments = path.slice(1).split('/');
  // The one empty segment allowed is the root's (`/`).
  if (path !== '/' && segments.some((segment) => segment === '' || /^(?:\.|%2e){1,2}$/i.test(segment)))
    refuse();
  return { path, url: new URL(`http://daemon/${query}`) };
}

const MAX_BODY = 64 * 1024;

/** The daemon's own reading routes besides /healthz, answered to GET and HEAD (the admin API's are in ROUTES). */
const OWN_GET_PATHS = new Set(['/openapi.json', '/metrics', '/v1/connections']);
const TOKEN_PATH = /^\/v1\/connections\/([^/]+)\/token$/;

/** 405 with the methods the path has (RFC 9110 §15.5.6: Allow is required). */
function notAllowed(req: IncomingMessage, allow: string[]): never {
  throw new ApiError(
    405,
    'method_not_allowed',
    `${req.method} is not served here (it answers ${allow.join(', ')})`,
    {
      allow: allow.join(', '),
    },
  );
}

/**
 * A route that reads connections, tokens or the admin API's data takes only the query parameters it
 * names: another one (a filter it does not have, `min-ttl` for `min_ttl`) is refused rather than
 * ignored, so a script never acts on an answer it did not ask for. The fixed documents (/healthz,
 * /metrics, /openapi.json) and the OAuth callback (whose query the platform writes) are not checked.
 */
function onlyQuery(url: URL, takes: string[], instead = ''): void {
  // Given twice (min_ttl=60&min_ttl=600): which one counts is not for the daemon to guess.
  const twice = takes.find((name) => url.searchParams.getAll(name).length > 1);
  if (twice) throw new ApiError(400, 'invalid_input', `query parameter ${twice} is given more than once`);
  const unknown = [...new Set(url.searchParams.keys())].filter((name) => !takes.includes(name));
  if (!unknown.length) return;
  const named = unknown
    .slice(0, 5)
    .map((name) => JSON.stringify(name.slice(0, 50)))
    .join(', ');
  throw new ApiError(
    400,
    'invalid_input',
    `unknown query parameter${unknown.length > 1 ? 's' : ''} ${named}: ${takes.length ? `this route takes only ${takes.join(', ')}` : 'this route takes none'}${instead}`,
  );
}

const PROXY_HEADERS = ['forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip'];

/** Requests that carried `Expect: 100-continue` (Node leaves the interim answer to the 'checkContinue' listener). */
const awaitingContinue = new WeakSet<IncomingMessage>();

/** Sockets whose request took too long to arrive (answered 408 by the 'clientError' listener). */
const timedOut = new WeakSet<Duplex>();

/**
 * The status under which a request whose client went away before its body was all sent is counted and
 * audited (nginx's "client closed request"): nothing is answered, and it is the client's doing, not the
 * daemon's nor its database's.
 */
const CLIENT_CLOSED = 499;

/**
 * A JSON request body, at most 64 KiB (413 beyond, without reading the rest). An empty body is
 * undefined; anything but JSON is refused with the reason. Secret fields are wrapped at once.
 */
async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY)
    throw new ApiError(413, 'payload_too_large', 'the body is larger than 64 KiB', { connection: 'close' });
  // A client that waits for 100 Continue is asked for its body only now, once the request is one that
  // reads it (a request refused before got its final answer instead, and never sent the body).
  if (awaitingContinue.has(req) && !res.headersSent) res.writeContinue();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY)
        throw new ApiError(413, 'payload_too_large', 'the body is larger than 64 KiB', {
          connection: 'close',
        });
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    // The request stream failed: its client closed the connection before the body was all sent, or
    // sent it too slowly (Node's error is then 'aborted' too, ECONNRESET, which is not the database's).
    if (timedOut.has(req.socket))
      throw new ApiError(408, 'request_timeout', 'the request took too long to arrive');
    throw new ApiError(
      CLIENT_CLOSED,
      'client_closed',
      'the client closed the connection before its body was sent',
    );
  }
  if (size === 0) return undefined;
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new ApiError(
      415,
      'unsupported_media_type',
      'send the body as JSON (Content-Type: application/json)',
    );
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ApiError(400, 'invalid_input', 'the body is not valid JSON');
  }
}

/** Who made a request, for the audit log: a name, the peer's address and its user agent. */
function actorOf(req: IncomingMessage, name: string) {
  return { name, address: clientAddress(req), userAgent: req.headers['user-agent']?.slice(0, 200) ?? null };
}

function clientAddress(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unix';
}

/** What a request that failed with `error` is answered. */
function errorFor(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  // A driver's own error that says what became of the database (unreachable, a privilege revoked):
  // not a bug of credvault's, and something to retry.
  error = error instanceof CredvaultError ? error : (mapDatabaseError(error, 'the database') ?? error);
  if (error instanceof CredvaultError) {
    if (error.code === 'not_found') return new ApiError(404, 'not_found', error.message);
    if (error.code === 'reauth_required') return new ApiError(409, 'reauth_required', error.message);
    if (error.code === 'unavailable') {
      const retry = error instanceof UnavailableError && error.retryAfter ? error.retryAfter : 5;
      return new ApiError(503, 'unavailable', error.message, { 'retry-after': String(retry) });
    }
    if (error.code === 'database_error') {
      // The cause (unreachable, or "permission denied for table …") is in the daemon's log.
      return new ApiError(503, 'unavailable', 'the database cannot be used now', { 'retry-after': '5' });
    }
    // Input the caller must change: the hint says how (which values to choose from, say), as it does
    // in the CLI's JSON errors.
    const message = error.hint ? `${error.message}. ${error.hint}` : error.message;
    if (error.code === 'invalid_input') return new ApiError(400, 'invalid_input', message);
    if (error.code === 'conflict') return new ApiError(409, 'conflict', message);
    if (error.code === 'key_error') return new ApiError(500, 'key_error', error.message);
  }
  return new ApiError(500, 'internal', 'unexpected failure');
}

/**
 * The route a request is for, as credvault_http_request_duration_seconds labels it: the names the
 * handler answers under (`token`, `connections`, `metrics`, `healthz`, `openapi`, `callback`, an admin
 * route's id), `method_not_allowed` or `not_found`. A fixed set, never a path.
 */
function routeOf(req: IncomingMessage): string {
  let pathname: string;
  try {
    pathname = targetOf(req).path;
  } catch {
    return 'not_found';
  }
  const method = req.method ?? 'GET';
  if (pathname === '/healthz') return 'healthz';
  if (pathname === '/metrics') return 'metrics';
  if (pathname === '/openapi.json') return 'openapi';
  if (pathname === '/v1/connections') return 'connections';
  if (TOKEN_PATH.test(pathname)) return 'token';
  try {
    if (matchCallback(pathname)) return 'callback';
    const found = matchRoute(method, pathname);
    if (found) return 'allow' in found ? 'method_not_allowed' : found.route.id;
  } catch {
    // A path segment that is not valid URL encoding.
  }
  return 'not_found';
}

/** The OpenAPI document: the routes are fixed, so it is built once (about 10 ms of work). */
let openApi: Record<string, unknown> | undefined;

export function createTokenServer(deps: ServerDeps): Server {
  const { ctx, cache, audit, metrics, log, options } = deps;
  const localClient: ClientRow | null = deps.localToken
    ? {
        id: LOCAL_CLIENT_ID,
        name: 'local-cli',
        tokenHash: hashClientToken(deps.localToken),
        role: 'admin',
        scope: { all: true },
        createdBy: 'daemon',
        createdAt: new Date(),
        expiresAt: null,
        revokedAt: null,
        lastUsedAt: null,
      }
    : null;

  /**
   * The client a request's token belongs to. `forMetrics`: a request for /metrics, which a client whose
   * token was verified before may keep reading while the database cannot be read to verify it again
   * (its cache entry lasts 60 s): an outage is when its metrics matter most, and they hold no secret.
   * Never for any other route: tokens, connections and the admin API fail closed (503). A token the
   * database says is unknown, revoked or expired is forgotten at once, so only a failure to read it
   * falls back on what was verified.
   */
  async function authenticate(req: IncomingMessage, { forMetrics = false } = {}): Promise<ClientRow> {
    const token = bearerToken(req);
    if (!token)
      throw new ApiError(401, 'unauthorized', 'a client token is required (Authorization: Bearer …)', {
        'www-authenticate': 'Bearer',
      });
    const hash = hashClientToken(token);
    if (localClient && sameHash(hash, localClient.tokenHash)) return localClient;
    let client = cache.client(hash);
    if (!client) {
      const since = cache.mark();
      try {
        client = await authenticateClient(ctx.db, token);
      } catch (error) {
        const verified = forMetrics ? cache.verifiedClient(hash) : null;
        if (!verified) throw error;
        return verified;
      }
      if (client && isLiveClient(client)) cache.rememberClient(hash, client, since);
      else cache.forgetClient(hash);
    }
    if (!client || !isLiveClient(client)) {
      throw new ApiError(401, 'unauthorized', 'the client token is unknown, revoked or expired', {
        'www-authenticate': 'Bearer error="invalid_token"',
      });
    }
    return client;
  }

  /**
   * Fails (401) unless the client a request was authenticated as at its start is still live: checked
   * again right before a token or an admin call's answer leaves, so that a client revoked (or expired)
   * while its request was in flight (a refresh can take seconds) gets nothing. From memory while the
   * cache holds the client (its entry is dropped when the revocation is notified), else from the
   * database; a failure to read it fails closed.
   */
  async function ensureStillLive(req: IncomingMessage, client: ClientRow): Promise<void> {
    if (client === localClient) return;
    // The cache is keyed by the token's hash, which the client's row holds: not hashed again.
    const cached = cache.client(client.tokenHash);
    const live = cached
      ? cached.id === client.id && isLiveClient(cached)
      : isLiveClient(client) && (await authenticateClient(ctx.db, bearerToken(req) ?? ''))?.id === client.id;
    if (!live) {
      throw new ApiError(
        401,
        'unauthorized',
        'the client token was revoked or expired while its request was in flight',
        { 'www-authenticate': 'Bearer error="invalid_token"' },
      );
    }
  }

  /**
   * The connection `ref` names, and `remember()`: stores it in the cache (under the ref, if it is one of
   * the connection's own: see DaemonCache.rememberConnection), to be called once the client may read it,
   * so that a refused request leaves nothing behind.
   */
  async function connectionFor(ref: string): Promise<{ connection: ConnectionRow; remember(): void }> {
    // Surrounding whitespace is not part of a ref (resolveConnection trims it too).
    const trimmed = ref.trim();
    const cached = cache.connectionByRef(trimmed);
    if (cached) return { connection: cached, remember: () => {} };
    const since = cache.mark();
    const connection = await resolveConnection(ctx.db, trimmed);
    return { connection, remember: () => cache.rememberConnection(trimmed, connection, since) };
  }

  /** A token valid for min_ttl: from memory when it is, else through the token service (one refresh per expiry). */
  async function validToken(
    connection: ConnectionRow,
    minTtlSeconds: number,
    actorName: string,
  ): Promise<{ token: CachedToken; refreshed: boolean }> {
    const grantId = connection.tokenId;
    // Only an active connection is served from memory: the token service refuses the others.
    const cached = grantId && connection.status === 'active' ? cache.token(grantId) : null;
    if (cached && (!cached.expiresAt || cached.expiresAt.getTime() - Date.now() > minTtlSeconds * 1000))
      return { token: cached, refreshed: false };
    const scoped = ctx.withActor({ name: actorName });
    const since = cache.mark();
    const { grant, refreshed } = await freshGrant(scoped, connection, { minTtlSeconds, purpose: 'daemon' });
    const accessToken = await openToken(ctx, grant, 'access');
    if (!accessToken) throw new NotFoundError('this connection has no access token');
    const token: CachedToken = {
      grantId: grant.id,
      version: grant.version,
      accessToken,
      tokenType: grant.tokenType,
      expiresAt: grant.accessTokenExpiresAt,
    };
    cache.rememberToken(token, since);
    return { token, refreshed };
  }

  async function serveToken(
    req: IncomingMessage,
    res: ServerResponse,
    client: ClientRow,
    ref: string,
    url: URL,
  ) {
    const minTtlText = url.searchParams.get('min_ttl') ?? '60';
    const minTtl = Number(minTtlText);
    if (!/^\d{1,8}$/.test(minTtlText) || minTtl > MAX_MIN_TTL_SECONDS) {
      throw new ApiError(
        400,
        'invalid_input',
        `min_ttl must be whole seconds from 0 to ${MAX_MIN_TTL_SECONDS} (a year)`,
      );
    }
    const local = client.id === LOCAL_CLIENT_ID;
    if (
      local &&
      req.headers['x-credvault-key'] !== keySourceLabel((await ctx.keyring()).source, ctx.config.env)
    ) {
      // `token get` with a key that is not this daemon's (or none): its full path reports that (exit 6)
      // as it would were no daemon running.
      throw new ApiError(403, 'forbidden', 'the caller is not configured with the key this daemon uses');
    }
    const actor = local ? localActor(req) : client.name;
    // `token get`'s fast path is recorded as its full path would be (`token get --format raw`), with
    // `via` saying it came through the daemon.
    const format = req.headers['x-credvault-format'];
    const detail = local
      ? {
          purpose: `token get --format ${typeof format === 'string' && /^(raw|json|header)$/.test(format) ? format : 'raw'}`,
          min_ttl: minTtl,
          via: 'daemon',
        }
      : { purpose: 'daemon', min_ttl: minTtl };
    // A refusal is recorded too, before it is answered; not for `token get`'s fast path, which takes
    // its full path on any refusal and records it there.
    const refused = async (entry: AuditEntry | null) => {
      if (!entry || local) return;
      await audit.write({ ...entry, actor: actorOf(req, actor) }, client.id).catch(() => {});
    };
    const found = await connectionFor(ref).catch(async (error: unknown) => {
      if (!(error instanceof NotFoundError)) throw error;
      // A request for a connection that does not exist is on record too (a client probing names
      // leaves a trace), under the target as it was asked. A client scoped to part of the vault
      // learns nothing of what is outside it, not even whether a connection of that name or account
      // exists: refused, and recorded, as one outside its scope is.
      const scoped = !local && !client.scope.all;
      await refused({
        action: 'token.serve',
        targetType: 'connection',
        targetId: null,
        connectionId: null,
        outcome: scoped ? 'denied' : 'failure',
        detail: { ...detail, ref: ref.slice(0, 200), error: scoped ? 'forbidden' : 'not_found' },
      });
      if (scoped)
        throw new ApiError(403, 'forbidden', `client ${client.name} may not read connection ${ref}`);
      throw error;
    });
    const { connection, remember } = found;
    if (!inScope(client, connection)) {
      await refused(refusedServe(connection, 'denied', 'forbidden', detail));
      throw new ApiError(403, 'forbidden', `client ${client.name} may not read connection ${ref}`);
    }
    remember();
    let token: CachedToken;
    let refreshed: boolean;
    try {
      ({ token, refreshed } = await validToken(connection, minTtl, actor));
    } catch (error) {
      await refused(refusalEntry(connection, error, detail));
      throw error;
    }
    // A client revoked while this request was in flight (waiting for a refresh, say) gets nothing.
    try {
      await ensureStillLive(req, client);
    } catch (error) {
      await refused(refusedServe(connection, 'denied', 'unauthorized', detail));
      throw error;
    }
    // Fail closed: the token leaves only after its audit record is committed.
    await audit.write(
      {
        action: 'token.serve',
        targetType: 'connection',
        targetId: connection.id,
        connectionId: connection.id,
        outcome: 'success',
        detail: { ...detail, refreshed },
        actor: actorOf(req, actor),
      },
      local ? null : client.id,
    );
    send(res, 200, tokenDocument(token.accessToken.reveal(), token.tokenType, token.expiresAt, connection));
  }

  /** The CLI names who it runs as (percent-encoded); only the local credential may. */
  function localActor(req: IncomingMessage): string {
    const header = req.headers['x-credvault-actor'];
    let name = '';
    try {
      name = typeof header === 'string' ? decodeURIComponent(header) : '';
    } catch {
      name = '';
    }
    // As the person's own process would record it (a tab included); NUL cannot be stored in text.
    return name.replaceAll('\0', '').trim() || 'local-cli';
  }

  /** The OAuth callback: the one route a browser reaches, and only with --public-callback-url. */
  async function callback(req: IncomingMessage, res: ServerResponse, platform: string, url: URL) {
    if (!options.publicCallbackUrl) {
      throw new ApiError(
        404,
        'not_found',
        'the callback route is off (start the daemon with --public-callback-url)',
      );
    }
    const actor = actorOf(req, 'oauth-callback');
    const page = await callbackPage(ctx.withActor(actor), platform, url.searchParams, (warning) =>
      log.warn(warning, { event: 'shred_failed', route: 'callback' }),
    );
    res.writeHead(page.status, { ...HTML_PAGE_HEADERS, 'content-length': Buffer.byteLength(page.html) });
    res.end(page.html);
  }

  /** Who a client's call acts as, for the audit log: the person behind the local CLI, or the client. */
  function callerOf(req: IncomingMessage, client: ClientRow) {
    return actorOf(req, client.id === LOCAL_CLIENT_ID ? localActor(req) : client.name);
  }

  /** The audit row of a client's call to the API (`api.<route>`), with its outcome and answer. */
  function recordCall(
    client: ClientRow,
    actor: ReturnType<typeof actorOf>,
    action: string,
    outcome: 'success' | 'failure' | 'denied',
    detail: Record<string, unknown>,
  ): Promise<void> {
    return audit.write(
      { action: `api.${action}`, targetType: 'api', targetId: null, outcome, detail, actor },
      client.id === LOCAL_CLIENT_ID ? null : client.id,
    );
  }

  /** 405 to a client, recorded (the path exists, not with this method). */
  async function refuseMethod(
    req: IncomingMessage,
    client: ClientRow,
    path: string,
    allow: string[],
  ): Promise<never> {
    await recordCall(client, callerOf(req, client), 'method_not_allowed', 'failure', {
      method: req.method,
      path: path.slice(0, 200),
      allow: allow.join(', '),
      status: 405,
    }).catch(() => {});
    notAllowed(req, allow);
  }

  /**
   * An admin route: the client's role and scope (before the body is read, so that a refusal is one
   * whatever was sent), the body through its schema, an audit row whatever happens.
   */
  async function admin(
    req: IncomingMessage,
    res: ServerResponse,
    client: ClientRow,
    found: { route: Route; params: Record<string, string> },
    url: URL,
  ) {
    const { route, params } = found;
    const actor = callerOf(req, client);
    const record = (outcome: 'success' | 'failure' | 'denied', status: number) =>
      recordCall(client, actor, route.id, outcome, {
        method: route.method,
        path: route.path,
        params,
        status,
      });
    try {
      const request = { ctx: ctx.withActor(actor), client, actor, params };
      const target = await authorizeRoute(route, request);
      onlyQuery(url, []);
      const rawBody = req.method === 'POST' ? await readJson(req, res) : undefined;
      const answer = await runRoute(route, { ...request, target, rawBody });
      // What this process changed is not announced back to it on the embedded database: forget what
      // the change may have made stale (a revoked client, a revoked grant) before answering.
      if (route.method === 'POST') cache.clear();
      // A client revoked while its call was in flight is not answered (what it did stays done, and
      // audited as such by the route: a client token it made is not shown). Not when the call was the
      // client's own revocation: it asked for it, and is answered that it was done.
      const revokedItself =
        route.id === 'clients.revoke' && (answer.body as { id?: unknown } | null)?.id === client.id;
      if (!revokedItself) await ensureStillLive(req, client);
      // Fail closed: the answer (a client token, say) leaves only after its audit record is committed.
      await record('success', answer.status);
      send(res, answer.status, answer.body);
    } catch (error) {
      const http = errorFor(error);
      await record(http.status === 403 ? 'denied' : 'failure', http.status).catch(() => {});
      // The error itself, not its answer: an internal one is logged with its cause.
      throw error;
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<string> {
    if (req.headers.origin !== undefined) {
      throw new ApiError(403, 'forbidden', 'requests from browsers (with an Origin header) are refused');
    }
    const host = hostOf(req);
    // `path` is what the request is routed on; `url` gives its query only.
    const { path, url } = targetOf(req);
    const callbackRoute = req.method === 'GET' ? matchCallback(path) : null;
    if (callbackRoute && callbackHost && host === callbackHost) {
      await callback(req, res, callbackRoute.platform, url);
      return 'callback';
    }
    if (!hostAllowed(host, options.allowedHosts)) {
      throw new ApiError(
        403,
        'forbidden',
        'this Host is not served (DNS rebinding protection); see --allowed-host',
      );
    }
    if (callbackRoute) {
      await callback(req, res, callbackRoute.platform, url);
      return 'callback';
    }
    if (path === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') notAllowed(req, ['GET', 'HEAD']);
      const health = await deps.health();
      send(res, health.ok ? 200 : 503, {
        status: health.ok ? 'ok' : 'unavailable',
        reasons: health.reasons,
        last_sweep_at: health.lastSweepAt?.toISOString() ?? null,
        shutting_down: health.shuttingDown,
        listening: health.listening,
      });
      return 'healthz';
    }
    if (deps.shuttingDown()) {
      // Still listening while in-flight refreshes finish, so that /healthz can say so; no new work.
      res.shouldKeepAlive = false;
      throw new ApiError(503, 'unavailable', 'the daemon is shutting down', { 'retry-after': '1' });
    }
    // A reverse proxy may hand the public callback on with its own Host (127.0.0.1:8787): whatever
    // else comes through it is refused, unless the operator opened the daemon beyond this machine.
    if (!options.allowRemote && PROXY_HEADERS.some((h) => req.headers[h] !== undefined)) {
      throw new ApiError(
        403,
        'forbidden',
        'requests forwarded by a proxy reach only the OAuth callback (start the daemon with --allow-remote to serve more)',
      );
    }
    // Every request but /healthz carries a client token (cli.md), the API's own description included.
    const client = await authenticate(req, { forMetrics: path === '/metrics' });
    // Its LAST USED in `clients list`, whatever the route (a metrics scraper's token included).
    if (client !== localClient) audit.used(client.id);
    // HEAD where GET reads without a side effect (RFC 9110 §9.3.2); the token route records every
    // token it serves, so it answers GET only.
    if (OWN_GET_PATHS.has(path) && req.method !== 'GET' && req.method !== 'HEAD')
      return refuseMethod(req, client, path, ['GET', 'HEAD']);
    if (TOKEN_PATH.test(path) && req.method !== 'GET') return refuseMethod(req, client, path, ['GET']);
    if (path === '/openapi.json') {
      openApi ??= openApiDocument();
      const document = openApi;
      // A call of the admin API like the others: recorded, and answered only once it is.
      await recordCall(client, callerOf(req, client), 'openapi', 'success', {
        method: req.method,
        path: path,
        status: 200,
      });
      send(res, 200, document);
      return 'openapi';
    }
    if (path === '/metrics') {
      send(res, 200, await metrics.registry.metrics(), { 'content-type': metrics.registry.contentType });
      return 'metrics';
    }
    if (path === '/v1/connections') {
      onlyQuery(
        url,
        [],
        ' (it answers every connection the client may read; /v1/integrations/{platform}/connections answers one platform’s)',
      );
      send(res, 200, await visibleConnections(ctx, client));
      return 'connections';
    }
    const match = TOKEN_PATH.exec(path);
    if (match) {
      onlyQuery(url, ['min_ttl']);
      let ref: string;
      try {
        ref = decodeURIComponent(match[1]!);
      } catch {
        throw new ApiError(400, 'invalid_input', 'the connection reference is not valid URL encoding');
      }
      await serveToken(req, res, client, ref, url);
      return 'token';
    }
    const found = matchRoute(req.method ?? 'GET', path);
    if (found && 'allow' in found) return refuseMethod(req, client, path, found.allow);
    if (found) {
      await admin(req, res, client, found, url);
      return found.route.id;
    }
    throw new ApiError(404, 'not_found', 'no such route');
  }

  const callbackHost = options.publicCallbackUrl
    ? new URL(options.publicCallbackUrl).host.toLowerCase()
    : null;

  // A failure every request meets (the database down: each of 300 requests would log it) is logged
  // once, then counted: "… (299 more in the last 10 s)" (see RepeatedLines).
  const failures = new RepeatedLines(log);

  /**
   * Answers a request through `work`, or its error as `{"error":…}` with the headers every answer
   * carries. Its latency is recorded under its route (routeOf), whether it succeeded or failed.
   */
  function respond(
    req: IncomingMessage,
    res: ServerResponse,
    work: () => Promise<string>,
    fixedRoute?: string,
  ): void {
    const stop = metrics.requests.startTimer();
    work()
      .then((route) => stop({ route, status: String(res.statusCode) }))
      .catch((error: unknown) => {
        const http = errorFor(error);
        const route = fixedRoute ?? routeOf(req);
        // A bug, or the database's own error (not one credvault raised), is logged with its cause.
        const foreign = !(error instanceof CredvaultError || error instanceof ApiError);
        if (http.status >= 500 && (http.code === 'internal' || foreign)) {
          // The cause ("permission denied for table credential_access_audit"), not drizzle's query text.
          const cause = errorMessage(error);
          const what = databaseFailure(error);
          failures.log(
            'error',
            // One kind per cause: connections reset, then refused, is one outage of the database.
            `${route}:${http.status}:${what ?? cause}`,
            what
              ? `request failed: ${what}; the requests that need it are answered ${http.status} meanwhile`
              : 'request failed',
            {
              event: 'request_failed',
              route,
              status: http.status,
              path: req.url?.split('?')[0],
              ...(what ? { cause: what } : {}),
              error: cause,
            },
          );
        }
        // A request answered 408 on its socket was answered; a client that went away is answered nothing.
        if (timedOut.has(req.socket)) {
          // (see the 'clientError' listener)
        } else if (!res.headersSent && http.status !== CLIENT_CLOSED)
          send(res, http.status, { error: { code: http.code, message: http.message } }, http.headers);
        else res.destroy();
        stop({ route, status: String(http.status) });
      });
  }

  const server = createServer(
    {
      maxHeaderSize: 16 * 1024,
      // A request without Host reaches the handler, which refuses it (403) as it refuses any Host it does
      // not serve, instead of Node's bare 400.
      requireHostHeader: false,
      // Node checks the header and request timeouts below only this often (30 s by default, which made
      // the 5 s header timeout up to 35 s).
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => respond(req, res, () => handle(req, res)),
  );
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    awaitingContinue.add(req);
    respond(req, res, () => handle(req, res));
  });
  // An expectation other than 100-continue: 417 (RFC 9110 §10.1.1), answered like any other refusal
  // instead of Node's bare one.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) =>
    respond(
      req,
      res,
      async () => {
        throw new ApiError(
          417,
          'expectation_failed',
          'the daemon meets no expectation but 100-continue; send the request without this Expect header',
        );
      },
      'expectation_failed',
    ),
  );
  // A request Node's parser refuses (headers beyond 16 KiB, a malformed request line, a request that
  // took too long) never reaches the handler: answered here on the socket, with the headers every
  // answer carries. Node answers nothing else itself: a request without Host, or with an Expect header,
  // reaches the handlers above.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // One answer per request: a request already answered (before its body came) gets no second one.
    if (error.code === 'ECONNRESET' || !socket.writable || answered.has(socket)) {
      socket.destroy();
      return;
    }
    if (error.code === 'HPE_HEADER_OVERFLOW')
      answerOnSocket(socket, 431, 'invalid_input', 'the request headers are larger than 16 KiB');
    else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // A request whose handler waits for its body then sees it fail: it is counted as this 408.
      timedOut.add(socket);
      answerOnSocket(socket, 408, 'request_timeout', 'the request took too long to arrive');
      // Closed once the answer is written: the handler reading its body then sees it end (a client
      // that sends nothing more would otherwise keep it waiting, half-open).
      socket.once('finish', () => socket.destroy());
    } else answerOnSocket(socket, 400, 'invalid_input', 'the request is not valid HTTP');
  });
  // CONNECT (a proxy's tunnel) is not served: answered as a method no path has, not by silence.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    const stop = metrics.requests.startTimer();
    answerOnSocket(
      socket,
      405,
      'method_not_allowed',
      'CONNECT is not served here: the daemon is not a proxy',
      { allow: 'GET, HEAD, POST' },
    );
    socket.once('finish', () => socket.destroy());
    stop({ route: 'method_not_allowed', status: '405' });
  });
  // What is still counted is logged as the daemon stops.
  server.on('close', () => failures.flush());
  server.requestTimeout = 15_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  return server;
}
