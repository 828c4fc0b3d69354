import * as oauth from 'oauth4webapi';
import { Secret } from '../crypto/secret.js';
import { InvalidInputError } from '../errors.js';
import { isLoopbackHost } from '../util/net.js';
import { excerpt, safeCode } from '../util/redact.js';
import { classifyStatus, ProviderError, parseRetryAfter } from './errors.js';
import { BufferedResponse, isResponse, platformFetch } from './fetch.js';
import { DEFAULT_USER_AGENT, networkFailure } from './http.js';
import type { CallOptions, CodeExchange, ProviderApp, TokenResult } from './types.js';

/**
 * The OAuth protocol steps, done by oauth4webapi (request building, client authentication, PKCE,
 * response validation). A platform describes its differences as a profile; this module turns every
 * failure into a classified ProviderError.
 */

export interface OAuthProfile {
  /**
   * How the client authenticates at the token endpoint. `post_or_none`: a public client sends no
   * secret. `basic_raw`: HTTP Basic without RFC 6749's form-encoding of id and secret.
   */
  clientAuth: 'client_secret_post' | 'client_secret_basic' | 'basic_raw' | 'post_or_none';
  /** Extra form parameters on the token endpoint (Microsoft requires `scope` on every refresh). */
  tokenParams?: (
    app: ProviderApp,
    grant: 'authorization_code' | 'refresh_token',
    consentedScope?: string | null,
  ) => Record<string, string>;
  /**
   * An error answer to a refresh that means the refresh token is dead, besides `invalid_grant`
   * (LinkedIn answers a dead one with `invalid_request`). Only refreshes are judged by it: the same
   * code elsewhere is about the request.
   */
  deadGrant?: (error: string, description: string) => boolean;
  /**
   * The access token's life in seconds when an answer gives no `expires_in` (RFC 6749 §5.1 leaves it
   * optional: "the authorization server SHOULD provide the expiration time via other means or document
   * the default value"): the platform's documented one. Default 3,600, the shortest of the four
   * (providers.md): assumed to end sooner than it does, a token is only refreshed early; with none, it
   * was taken as never ending and served, stale, for good.
   */
  accessTokenSeconds?: number;
  /**
   * An error answer of the token endpoint that is no OAuth error but means the grant is refused
   * (Reddit answers an unknown or revoked refresh token with 400 and `{"error": 400}`): read as
   * invalid_grant. Only that shape: any other answer (a proxy's HTML 400) is judged by its status.
   */
  refusedGrant?: (status: number, body: Record<string, unknown>) => boolean;
  /** The token response lacks `token_type` (LinkedIn); supply this one. */
  missingTokenType?: string;
  /** Headers on every token and revoke request (Reddit wants its descriptive User-Agent). */
  headers?: (app: ProviderApp) => Record<string, string>;
}

function authorizationServer(app: ProviderApp): oauth.AuthorizationServer {
  return {
    issuer: new URL(app.endpoints.token).origin,
    token_endpoint: app.endpoints.token,
    ...(app.endpoints.revoke ? { revocation_endpoint: app.endpoints.revoke } : {}),
  };
}

function clientAuthentication(profile: OAuthProfile, app: ProviderApp): oauth.ClientAuth {
  const secret = app.clientSecret?.reveal();
  if (profile.clientAuth === 'post_or_none') return secret ? oauth.ClientSecretPost(secret) : oauth.None();
  if (!secret)
    throw new ProviderError(
      'client',
      `app ${app.label} has no client secret, which ${app.platform} requires`,
    );
  if (profile.clientAuth === 'basic_raw') return rawBasic(secret);
  return profile.clientAuth === 'client_secret_basic'
    ? oauth.ClientSecretBasic(secret)
    : oauth.ClientSecretPost(secret);
}

/**
 * HTTP Basic with the client id and secret as they are. RFC 6749 §2.3.1 form-encodes both first
 * (oauth4webapi does, turning `-` into `%2D`), but Reddit compares the raw values, and its client ids
 * routinely contain `-` and `_`; PRAW and Reddit's own examples send them raw.
 */
function rawBasic(secret: string): oauth.ClientAuth {
  return (_as, client, _body, headers) => {
    headers.set(
      'authorization',
      `Basic ${Buffer.from(`${client.client_id}:${secret}`, 'utf8').toString('base64')}`,
    );
  };
}

/** https everywhere except a loopback host (local doubles and tunnels); apps refuse anything else. */
function insecureAllowed(url: string): boolean {
  const parsed = new URL(url);
  return parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname);
}

function requestOptions(
  profile: OAuthProfile,
  app: ProviderApp,
  url: string,
  options: CallOptions,
  extra?: Record<string, string>,
) {
  const fetchImpl: typeof platformFetch = async (input, init) =>
    tokenAnswer(await platformFetch(input, init), profile);
  return {
    signal: options.signal,
    headers: { 'user-agent': DEFAULT_USER_AGENT, ...(profile.headers?.(app) ?? {}) },
    [oauth.allowInsecureRequests]: insecureAllowed(url),
    [oauth.customFetch]: fetchImpl,
    ...(extra && Object.keys(extra).length ? { additionalParameters: extra } : {}),
  };
}

/**
 * A token answer as credvault takes it. An ID token goes: the platforms send one when `openid` was
 * granted (an app may ask for it; Google adds it back for a client once granted, through
 * include_granted_scopes), and oauth4webapi would check its issuer against the token endpoint's
 * origin, which no platform's identity issuer is (accounts.google.com, login.microsoftonline.com/
 * {tenant}/v2.0, www.linkedin.com/oauth): every exchange and refresh would fail. credvault keeps
 * only the access and refresh tokens, and never reads who signed in. LinkedIn's answers carry no
 * token_type, which oauth4webapi (rightly) insists on: `tokenType` supplies it.
 */
async function tokenAnswer(response: Response, profile: OAuthProfile): Promise<Response> {
  if (!response.headers.get('content-type')?.includes('json')) return response;
  if (!response.ok)
    return profile.refusedGrant ? refusedGrantAnswer(response, profile.refusedGrant) : response;
  const tokenType = profile.missingTokenType;
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON after all: oauth4webapi reports it as such.
    return new BufferedResponse(Buffer.from(text), response).asResponse();
  }
  if (!body || typeof body !== 'object' || Array.isArray(body))
    return new BufferedResponse(Buffer.from(text), response).asResponse();
  const answer = body as Record<string, unknown>;
  if (typeof answer.error === 'string' && answer.error && answer.access_token === undefined) {
    // Reddit answers a refused grant with HTTP 200 and an error body: prawcore (Reddit's official
    // client, auth.py _request_token) checks `if "error" in payload:  # Why are these OKAY
    // responses?` after a 200. Read as the 400 it means, so it is judged as that OAuth error.
    const init = { status: 400, statusText: 'Bad Request', headers: response.headers, url: response.url };
    return new BufferedResponse(Buffer.from(text), init).asResponse();
  }
  delete answer.id_token;
  if (tokenType && answer.token_type === undefined) answer.token_type = tokenType;
  return new BufferedResponse(Buffer.from(JSON.stringify(answer)), response).asResponse();
}

/** An error answer `refused` recognises, rewritten as the invalid_grant it means; others as they came. */
async function refusedGrantAnswer(
  response: Response,
  refused: NonNullable<OAuthProfile['refusedGrant']>,
): Promise<Response> {
  const text = await response.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: judged by its status.
  }
  const recognised =
    body !== null && typeof body === 'object' && !Array.isArray(body)
      ? refused(response.status, body as Record<string, unknown>)
      : false;
  const init = {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
    url: response.url,
  };
  const rewritten = JSON.stringify({
    error: 'invalid_grant',
    error_description: `the grant was refused (HTTP ${response.status}, ${text.slice(0, 200)})`,
  });
  return new BufferedResponse(Buffer.from(recognised ? rewritten : text), init).asResponse();
}

function toTokenResult(json: oauth.TokenEndpointResponse, now: number, profile: OAuthProfile): TokenResult {
  const refreshExpiresIn = Number((json as Record<string, unknown>).refresh_token_expires_in);
  return {
    accessToken: new Secret(json.access_token),
    refreshToken: json.refresh_token ? new Secret(json.refresh_token) : null,
    tokenType: json.token_type === 'bearer' ? 'Bearer' : json.token_type,
    expiresAt: new Date(
      now +
        (typeof json.expires_in === 'number' ? json.expires_in : (profile.accessTokenSeconds ?? 3_600)) *
          1000,
    ),
    refreshTokenExpiresAt:
      Number.isFinite(refreshExpiresIn) && refreshExpiresIn > 0
        ? new Date(now + refreshExpiresIn * 1000)
        : null,
    scope: typeof json.scope === 'string' ? json.scope : null,
  };
}

/** An answer's media type as it says it (`text/html`), without parameters; `no content type` when none. */
function mediaType(response: { headers: Headers }): string {
  const type = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  return type.replace(/[^a-z0-9!#$&^_.+/-]/g, '').slice(0, 64) || 'no content type';
}

/** Maps whatever the exchange threw to a ProviderError; tokens in platform text are redacted. */
function classify(
  error: unknown,
  profile: OAuthProfile,
  what: string,
  options: CallOptions,
  secrets: Array<string | null>,
  refreshing = false,
): ProviderError {
  if (error instanceof ProviderError) return error;
  if (error instanceof oauth.ResponseBodyError) {
    // A refresh answered that the person must sign in again (OpenID Connect's interaction_required,
    // consent_required, login_required: Microsoft's when a tenant starts requiring MFA, AADSTS50079,
    // or consent was withdrawn, AADSTS65001) has a grant no refresh will renew: only a connect will.
    const dead =
      error.error === 'invalid_grant' ||
      (refreshing && SIGN_IN_AGAIN.has(error.error)) ||
      (refreshing && profile.deadGrant?.(error.error, error.error_description ?? '') === true);
    // At the token endpoint, any other 4xx error (invalid_client, invalid_request, invalid_scope,
    // unsupported_grant_type…) is about the app or its configuration: a person has to look; except
    // temporarily_unavailable (RFC 6749 §4.1.2.1; Microsoft answers it with a 400, AADSTS90033:
    // "a transient error has occurred, please try again"), which is retried as a 5xx is.
    const kind = dead
      ? 'dead_grant'
      : error.error === 'access_denied'
        ? 'access_denied'
        : error.status >= 500 || error.status === 429
          ? classifyStatus(error.status)
          : error.error === 'temporarily_unavailable'
            ? 'transient'
            : 'client';
    const description = error.error_description ? `: ${excerpt(error.error_description, secrets)}` : '';
    return new ProviderError(kind, `${what} was refused: ${safeCode(error.error)}${description}`, {
      status: error.status,
      platformCode: safeCode(error.error),
      retryAfter: parseRetryAfter(error.response.headers.get('retry-after')),
    });
  }
  if (error instanceof oauth.AuthorizationResponseError) {
    const description = error.error_description ? `: ${excerpt(error.error_description, secrets)}` : '';
    return new ProviderError(
      error.error === 'access_denied' ? 'access_denied' : 'invalid_request',
      `the platform answered the authorization with ${safeCode(error.error)}${description}`,
      { platformCode: safeCode(error.error) },
    );
  }
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    return new ProviderError(
      'client',
      `${what} was refused (HTTP ${error.status}): the app's client credentials were not accepted`,
      {
        status: error.status,
      },
    );
  }
  if (error instanceof oauth.OperationProcessingError) {
    const response = (error as { cause?: unknown }).cause;
    // A success that is no token answer (a captive portal's or a proxy's login page, an answer cut
    // short) says nothing of the grant: the platform's answer could not be read, and is asked again
    // later as after a 5xx. Only its content type is told: the body may echo what was sent.
    if (isResponse(response) && response.ok) {
      return new ProviderError(
        'transient',
        `${what}: the token endpoint answered HTTP ${response.status} with ${mediaType(response)}, which is not an OAuth token response`,
        { status: response.status },
      );
    }
    if (isResponse(response)) {
      return new ProviderError(
        classifyStatus(response.status),
        `${what} failed with HTTP ${response.status}`,
        {
          status: response.status,
          retryAfter: parseRetryAfter(response.headers.get('retry-after')),
        },
      );
    }
    // Its body, read as JSON, lacks what a token answer has (or has it wrong). oauth4webapi checks the
    // status first: whatever it finds wrong with the body came with a 200.
    return new ProviderError(
      'transient',
      `${what}: the token endpoint answered HTTP 200 with something that is not a valid OAuth token response (${error.message})`,
      { status: 200 },
    );
  }
  return networkFailure(error, what, options.signal);
}

export async function exchangeCode(
  profile: OAuthProfile,
  app: ProviderApp,
  exchange: CodeExchange,
  options: CallOptions,
): Promise<TokenResult> {
  const what = `exchanging the authorization code at ${app.endpoints.token}`;
  const as = authorizationServer(app);
  const client: oauth.Client = { client_id: app.clientId };
  // The caller matched `state` against its single-use record; oauth4webapi checks it again and
  // brands the parameters, and refuses to exchange anything unbranded. `iss` (RFC 9207) is dropped:
  // these platforms do not publish it consistently, and each state is bound to one app already.
  const callback = new URLSearchParams(exchange.callback);
  callback.delete('iss');
  /** The request went out: a failure before it is of the callback, not the platform's answer. */
  let sent = false;
  try {
    const validated = oauth.validateAuthResponse(as, client, callback, exchange.state);
    const request = requestOptions(
      profile,
      app,
      app.endpoints.token,
      options,
      profile.tokenParams?.(app, 'authorization_code'),
    );
    const send = request[oauth.customFetch];
    const response = await oauth.authorizationCodeGrantRequest(
      as,
      client,
      clientAuthentication(profile, app),
      validated,
      exchange.redirectUri,
      exchange.codeVerifier ?? oauth.nopkce,
      {
        ...request,
        [oauth.customFetch]: (input: string, init: oauth.CustomFetchOptions<'POST', URLSearchParams>) => {
          sent = true;
          return send(input, init);
        },
      },
    );
    const now = Date.now();
    return toTokenResult(await oauth.processAuthorizationCodeResponse(as, client, response), now, profile);
  } catch (error) {
    // oauth4webapi checks the callback's parameters on this machine before it sends anything (each
    // once, a code present): such a refusal is of the callback as it came, not an answer of the
    // platform, and nothing to retry later. An `error=` answer is the platform's, classified below.
    if (!sent && error instanceof oauth.OperationProcessingError) {
      throw new InvalidInputError(
        `the callback is not a valid authorization answer (${error.message}); nothing was sent to ${app.platform}`,
        { hint: 'Give the address the browser was sent back to, as it is.' },
      );
    }
    throw classify(error, profile, what, options, [app.clientSecret?.reveal() ?? null]);
  }
}

/** Error codes of a refresh that mean a person must sign in again (see classify). */
const SIGN_IN_AGAIN = new Set(['interaction_required', 'consent_required', 'login_required']);

export async function refreshGrant(
  profile: OAuthProfile,
  app: ProviderApp,
  refreshToken: Secret,
  options: CallOptions,
  consentedScope?: string | null,
): Promise<TokenResult> {
  const what = `refreshing at ${app.endpoints.token}`;
  try {
    const as = authorizationServer(app);
    const client: oauth.Client = { client_id: app.clientId };
    const response = await oauth.refreshTokenGrantRequest(
      as,
      client,
      clientAuthentication(profile, app),
      refreshToken.reveal(),
      requestOptions(
        profile,
        app,
        app.endpoints.token,
        options,
        profile.tokenParams?.(app, 'refresh_token', consentedScope),
      ),
    );
    const now = Date.now();
    return toTokenResult(await oauth.processRefreshTokenResponse(as, client, response), now, profile);
  } catch (error) {
    throw classify(
      error,
      profile,
      what,
      options,
      [refreshToken.reveal(), app.clientSecret?.reveal() ?? null],
      true,
    );
  }
}

/** RFC 7009 revocation; `hint` is `refresh_token` or `access_token`. */
export async function revokeToken(
  profile: OAuthProfile,
  app: ProviderApp,
  token: Secret,
  hint: 'refresh_token' | 'access_token',
  options: CallOptions,
  extraParams: Record<string, string> = {},
): Promise<void> {
  const url = app.endpoints.revoke;
  if (!url) throw new ProviderError('invalid_request', `${app.platform} has no revocation endpoint`);
  const what = `revoking at ${url}`;
  try {
    const as = authorizationServer(app);
    const response = await oauth.revocationRequest(
      as,
      { client_id: app.clientId },
      clientAuthentication(profile, app),
      token.reveal(),
      {
        ...requestOptions(profile, app, url, options, { token_type_hint: hint, ...extraParams }),
      },
    );
    // RFC 7009 says 200; Reddit answers 204 No Content.
    if (response.status !== 204) await oauth.processRevocationResponse(response);
  } catch (error) {
    throw classify(error, profile, what, options, [token.reveal(), app.clientSecret?.reveal() ?? null]);
  }
}
