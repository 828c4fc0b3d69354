/**
 * What went wrong at a platform, classified once, where the platform's quirks are known. The token
 * service decides what each kind means for a connection; nothing branches on message text.
 *
 * - dead_grant: the refresh token is dead (invalid_grant, LinkedIn's invalid_request): reconnect.
 * - client: the app's own credentials or configuration were refused (invalid_client…): fix the app.
 * - unauthenticated: an API refused the access token (401): refresh once and retry.
 * - access_denied: the person declined consent.
 * - transient: timeout, network failure, 5xx: retry with backoff.
 * - rate_limited: 429 (and platform throttling codes): retry after the platform's wait.
 * - forbidden: the grant works but may not do this (403, missing developer token access…).
 * - invalid_response: the platform answered something credvault cannot use.
 */
export type ProviderFailure =
  | 'dead_grant'
  | 'unauthenticated'
  | 'client'
  | 'access_denied'
  | 'transient'
  | 'rate_limited'
  | 'forbidden'
  | 'not_found'
  | 'invalid_request'
  | 'invalid_response';

export class ProviderError extends Error {
  readonly kind: ProviderFailure;
  readonly status: number | null;
  /** The platform's own error code (`invalid_grant`, `AADSTS70000`, `PAGE_SIZE_NOT_SUPPORTED`…). */
  readonly platformCode: string | null;
  /** Seconds the platform asked us to wait. */
  readonly retryAfter: number | null;
  /** A change was sent and no answer came: the platform may have made it (a timeout on a write). */
  inDoubt = false;
  /**
   * The request never reached the platform: its name did not resolve, or no connection to it could
   * be made (networkFailure). Nothing it asked can have been done there.
   */
  unsent = false;

  constructor(
    kind: ProviderFailure,
    message: string,
    details: {
      status?: number | null;
      platformCode?: string | null;
      retryAfter?: number | null;
      cause?: unknown;
    } = {},
  ) {
    super(message);
    this.name = 'ProviderError';
    this.kind = kind;
    this.status = details.status ?? null;
    this.platformCode = details.platformCode ?? null;
    this.retryAfter = details.retryAfter ?? null;
    if (details.cause !== undefined) {
      Object.defineProperty(this, 'cause', { value: details.cause, enumerable: false });
    }
  }

  get retryable(): boolean {
    return this.kind === 'transient' || this.kind === 'rate_limited';
  }

  /**
   * Sent, and no answer came (a timeout, a connection dropped): the platform may have processed it,
   * a refresh included, whose rotated refresh token would then be lost.
   */
  get unanswered(): boolean {
    return this.kind === 'transient' && this.status === null && !this.unsent;
  }
}

/** Retry-After as seconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

export function classifyStatus(status: number): ProviderFailure {
  if (status === 429) return 'rate_limited';
  if (status >= 500 || status === 408) return 'transient';
  if (status === 401) return 'client';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  return 'invalid_request';
}
