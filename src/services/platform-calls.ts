import {
  type CredvaultError,
  InvalidInputError,
  NotFoundError,
  ReauthRequiredError,
  UnavailableError,
} from '../errors.js';
import { ProviderError } from '../providers/errors.js';

/** Runs a platform call with a deadline (CREDVAULT_HTTP_TIMEOUT); the signal aborts the request when it passes. */
export async function withDeadline<T>(
  ctx: { config: { httpTimeoutMs: number } },
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  return fn(AbortSignal.timeout(ctx.config.httpTimeoutMs));
}

/** What a platform failure means to the person running credvault: the contract's error and exit code. */
export function providerFailure(error: unknown, context: string): CredvaultError | unknown {
  if (!(error instanceof ProviderError)) return error;
  const message = `${context}: ${error.message}`;
  switch (error.kind) {
    case 'dead_grant':
    case 'access_denied':
    case 'unauthenticated':
      return new ReauthRequiredError(message, {
        hint: 'Connect again with `credvault connect`.',
        cause: error,
      });
    case 'client':
      return new ReauthRequiredError(message, {
        hint: 'The platform refused the app itself; check its client id and secret (`credvault apps update APP --new-client-secret`).',
        cause: error,
      });
    case 'forbidden':
      return new ReauthRequiredError(message, {
        hint: 'The grant works but may not do this; a person with access must grant it.',
        cause: error,
      });
    case 'transient':
    case 'rate_limited':
    case 'invalid_response':
      return new UnavailableError(message, { retryAfter: error.retryAfter ?? undefined, cause: error });
    case 'not_found':
      return new NotFoundError(message, { cause: error });
    case 'invalid_request':
      return new InvalidInputError(message, { cause: error });
  }
}
