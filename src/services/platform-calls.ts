import {
  type CredvaultError,
  InvalidInputError,
  NotFoundError,
  ReauthRequiredError,
  UnavailableError,
} from '../errors.js';
import { ProviderError, type ProviderFailure } from '../providers/errors.js';
import { jitter } from '../util/backoff.js';

/**
 * Runs a platform call with a deadline (CREDVAULT_HTTP_TIMEOUT); the signal aborts the request when it
 * passes. An operation of several requests (`requests`: the most it may make, a campaign list of many
 * pages) gets that many deadlines; each API request also has one of its own (http.ts).
 */
export async function withDeadline<T>(
  ctx: { config: { httpTimeoutMs: number } },
  fn: (signal: AbortSignal) => Promise<T>,
  requests = 1,
): Promise<T> {
  return fn(AbortSignal.timeout(ctx.config.httpTimeoutMs * requests));
}

/**
 * How long to wait before trying a platform call again after a retryable failure: the platform's
 * Retry-After when it sent one, else half a second doubled per attempt, with jitter.
 */
export function retryDelayMs(error: ProviderError, attempt: number): number {
  return error.retryAfter !== null ? error.retryAfter * 1000 : jitter(500 * 2 ** (attempt - 1), 0.5);
}

const HINTS: Partial<Record<ProviderFailure, string>> = {
  dead_grant: 'Connect again with `credvault connect`.',
  access_denied: 'Connect again with `credvault connect`, and allow access.',
  unauthenticated: 'Connect again with `credvault connect`.',
  client:
    'The platform refused the app itself; check its client id and secret (`credvault apps update APP --new-client-secret`).',
  forbidden: 'The grant works but may not do this; a person with access must grant it.',
};

/**
 * What a kind of platform failure means to the person running credvault: the contract's error and
 * exit code. The one mapping, for a failure just met and for one recorded earlier (a cool-down).
 */
export function errorForKind(
  kind: ProviderFailure,
  message: string,
  options: { retryAfter?: number | null; hint?: string; cause?: unknown } = {},
): CredvaultError {
  const wait =
    kind === 'rate_limited' && options.retryAfter
      ? `The platform asks to wait ${options.retryAfter} s before trying again.`
      : undefined;
  const hint = options.hint ?? HINTS[kind] ?? wait;
  const base = { ...(hint ? { hint } : {}), ...(options.cause ? { cause: options.cause } : {}) };
  switch (kind) {
    case 'dead_grant':
    case 'access_denied':
    case 'unauthenticated':
    case 'client':
    case 'forbidden':
      return new ReauthRequiredError(message, base);
    case 'transient':
    case 'rate_limited':
    case 'invalid_response':
      return new UnavailableError(message, { ...base, retryAfter: options.retryAfter ?? undefined });
    case 'not_found':
      return new NotFoundError(message, base);
    case 'invalid_request':
      return new InvalidInputError(message, base);
  }
}

/** A ProviderError as the contract's error; anything else is passed through. */
export function providerFailure(error: unknown, context: string): CredvaultError | unknown {
  if (!(error instanceof ProviderError)) return error;
  // The wait goes into the message too: under --json an error is its code and message only.
  const wait =
    error.kind === 'rate_limited' && error.retryAfter && !/\bwait\b/i.test(error.message)
      ? ` (retry after ${error.retryAfter} s)`
      : '';
  // Google's DEVELOPER_TOKEN_* errors are the app's configuration: no consent fixes them.
  const developerToken = error.platformCode?.startsWith('DEVELOPER_TOKEN')
    ? {
        hint: `The platform refused the app's developer token (${error.platformCode}): give the app one it accepts with \`credvault apps update APP --new-developer-token\`; connecting again does not help.`,
      }
    : {};
  return errorForKind(error.kind, `${context}: ${error.message}${wait}`, {
    retryAfter: error.retryAfter,
    cause: error,
    ...developerToken,
  });
}
