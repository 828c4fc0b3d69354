/**
 * Every failure a user can see is a CredvaultError with a stable `code` and the exit code from
 * spec/cli.md. Only src/cli/main.ts turns one into a process exit; nothing branches on message text.
 */

export type ErrorCode =
  | 'internal'
  | 'invalid_input'
  | 'not_found'
  | 'reauth_required'
  | 'unavailable'
  | 'key_error'
  | 'conflict'
  | 'database_error';

export const EXIT_CODES: Record<ErrorCode, number> = {
  internal: 1,
  invalid_input: 2,
  not_found: 3,
  reauth_required: 4,
  unavailable: 5,
  key_error: 6,
  conflict: 7,
  database_error: 8,
};

export interface ErrorOptions {
  /** What the user can do about it; printed on its own line after the message. */
  hint?: string;
  cause?: unknown;
}

export class CredvaultError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
    if (options.cause !== undefined) {
      // Non-enumerable so that serializing an error never dumps a response body or a driver object.
      Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false, configurable: true });
    }
  }

  get exitCode(): number {
    return EXIT_CODES[this.code];
  }
}

export class InternalError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('internal', message, options);
  }
}

export class InvalidInputError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('invalid_input', message, options);
  }
}

export class NotFoundError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('not_found', message, options);
  }
}

export class ReauthRequiredError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('reauth_required', message, options);
  }
}

export class UnavailableError extends CredvaultError {
  /** Seconds the caller should wait before trying again, when known. */
  readonly retryAfter: number | undefined;
  constructor(message: string, options: ErrorOptions & { retryAfter?: number } = {}) {
    super('unavailable', message, options);
    this.retryAfter = options.retryAfter;
  }
}

export class KeyError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('key_error', message, options);
  }
}

export class ConflictError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('conflict', message, options);
  }
}

export class DatabaseError extends CredvaultError {
  constructor(message: string, options?: ErrorOptions) {
    super('database_error', message, options);
  }
}

export function isCredvaultError(value: unknown): value is CredvaultError {
  return value instanceof CredvaultError;
}
