import { withDeadline } from '../util/deadline.js';
import { excerpt, safeCode } from '../util/redact.js';
import { VERSION } from '../version.js';
import { classifyStatus, ProviderError, type ProviderFailure, parseRetryAfter } from './errors.js';
import { platformFetch } from './fetch.js';

export const DEFAULT_USER_AGENT = `credvault/${VERSION}`;

/**
 * How a platform words an error body: its code, message and, where it says more than the status, the
 * kind; and the wait it asks for (seconds) when it says so in its body or its own headers rather than
 * in Retry-After.
 */
export type ErrorReader = (
  status: number,
  body: unknown,
  headers: Headers,
) => {
  code?: string | null;
  message?: string | null;
  kind?: ProviderFailure | null;
  retryAfter?: number | null;
};

export interface ApiRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  headers: Record<string, string>;
  json?: unknown;
  signal: AbortSignal;
  /** Values to scrub from any error text (the access token, the developer token…). */
  secrets: Array<string | null | undefined>;
  /** What this call does, for messages: "listing accessible customers". */
  what: string;
  readError?: ErrorReader;
  /** The request changes something at the platform: unanswered, its outcome is in doubt. */
  changes?: boolean;
}

export interface ApiResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

/**
 * The errors of a request that never left: the platform's name did not resolve, or no connection to
 * it could be made (refused, no route). A connection reset or a timeout may come after the request
 * was sent, so neither is among them.
 */
const NOT_SENT = new Set([
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
]);

/** Turns a fetch failure (network error, abort, timeout) into a transient ProviderError. */
export function networkFailure(error: unknown, what: string, signal: AbortSignal): ProviderError {
  const cause = (error as Error)?.cause;
  const reason = signal.aborted
    ? signal.reason instanceof Error && signal.reason.name === 'TimeoutError'
      ? 'timed out'
      : 'was cancelled'
    : `failed: ${cause instanceof Error ? cause.message : ((error as Error)?.message ?? String(error))}`;
  const failure = new ProviderError('transient', `${what} ${reason}`, { cause: error });
  failure.unsent =
    !signal.aborted && NOT_SENT.has(String((cause as NodeJS.ErrnoException | undefined)?.code));
  return failure;
}

/** A server's failures that say nothing of whether a change it was sent was made. */
const IN_DOUBT_STATUSES = new Set([500, 502, 504]);

let requestTimeoutMs = 15_000;

/**
 * The deadline of each request to a platform API (CREDVAULT_HTTP_TIMEOUT). An operation of many
 * requests (a campaign list of many pages) has its own, longer deadline in the caller's signal.
 */
export function setRequestTimeout(ms: number): void {
  requestTimeoutMs = ms;
}

/** A JSON API call to a platform. Non-2xx answers become ProviderErrors with a redacted excerpt. */
export function apiRequest<T = unknown>(request: ApiRequest): Promise<ApiResponse<T>> {
  // The request's own deadline on a timer of its own: an AbortSignal.timeout given only to
  // AbortSignal.any can be collected with nothing else holding it, and then never fires (a hung
  // request waited for the whole operation's deadline, 40 of them for a campaign list).
  return withDeadline(requestTimeoutMs, (timeout) =>
    requestWithin<T>(request, AbortSignal.any([request.signal, timeout])),
  );
}

async function requestWithin<T>(request: ApiRequest, signal: AbortSignal): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = {
    accept: 'application/json',
    'user-agent': DEFAULT_USER_AGENT,
    ...request.headers,
  };
  let body: string | undefined;
  if (request.json !== undefined) {
    body = JSON.stringify(request.json);
    headers['content-type'] = 'application/json';
  }
  let response: Response;
  try {
    response = await platformFetch(request.url, {
      method: request.method,
      headers,
      body,
      signal,
      redirect: 'error',
    });
  } catch (error) {
    const failure = networkFailure(error, request.what, signal);
    failure.inDoubt = request.changes === true;
    throw failure;
  }
  const text = await response.text().catch(() => '');
  let parsed: unknown = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    const read = request.readError?.(response.status, parsed, response.headers) ?? {};
    // At an API (not the token endpoint), 401 means the access token was refused.
    const kind = read.kind ?? (response.status === 401 ? 'unauthenticated' : classifyStatus(response.status));
    const detail = read.message ?? (parsed === null ? text : JSON.stringify(parsed));
    const code = read.code ? safeCode(read.code) : null;
    const failure = new ProviderError(
      kind,
      `${request.what} failed with HTTP ${response.status}${code ? ` ${code}` : ''}: ${excerpt(detail, request.secrets)}`,
      {
        status: response.status,
        platformCode: code,
        retryAfter: parseRetryAfter(response.headers.get('retry-after')) ?? read.retryAfter ?? null,
      },
    );
    // A change answered with a server's failure (500, or a gateway's 502 or 504) is not proof that it
    // was not made: the platform may have made it before failing, or behind the gateway that timed out.
    failure.inDoubt = request.changes === true && IN_DOUBT_STATUSES.has(response.status);
    throw failure;
  }
  if (response.status !== 204 && parsed === null && text) {
    throw new ProviderError(
      'invalid_response',
      `${request.what}: the platform answered something that is not JSON`,
      {
        status: response.status,
      },
    );
  }
  return { status: response.status, headers: response.headers, body: parsed as T };
}
