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
  | 'database_error'
  // `exec` only: the command it was given cannot be run, told with a shell's exit codes (the command's
  // own codes pass through exec, so credvault's 2 or 3 would read as the command's).
  | 'command_not_found'
  | 'command_cannot_run';

export const EXIT_CODES: Record<ErrorCode, number> = {
  internal: 1,
  invalid_input: 2,
  not_found: 3,
  reauth_required: 4,
  unavailable: 5,
  key_error: 6,
  conflict: 7,
  database_error: 8,
  command_not_found: 127,
  command_cannot_run: 126,
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

/**
 * What a terminal may act on rather than show: C0 and C1 controls (an escape sequence, a carriage
 * return that rewrites the line), format characters (bidi overrides, zero-width ones), the line and
 * paragraph separators, and a lone surrogate.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\u2028\u2029]/u;
const SHORT_ESCAPES: Record<string, string> = {
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/** One character as JSON would write it when unprintable (`\u001b`, `\n`), else itself. */
function shownChar(char: string): string {
  if (!UNPRINTABLE.test(char)) return char;
  const short = SHORT_ESCAPES[char];
  if (short) return short;
  let escaped = '';
  for (let i = 0; i < char.length; i++) escaped += `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return escaped;
}

/** Unprintable characters escaped as JSON writes them: seen, never acted on by a terminal. */
export function escapeUnprintable(text: string): string {
  return Array.from(text, shownChar).join('');
}

/**
 * Pieces (each a character as it is shown) cut in the middle with an ellipsis when they are longer
 * than `max`, keeping `head` of it and what is left of `max` at the end (no escape is cut in two).
 */
function cutMiddle(pieces: string[], max: number, head: number, mark: string): string {
  const all = pieces.join('');
  if (all.length <= max) return all;
  const take = (from: string[], budget: number) => {
    const kept: string[] = [];
    let length = 0;
    for (const piece of from) {
      if (length + piece.length > budget) break;
      kept.push(piece);
      length += piece.length;
    }
    return kept;
  };
  const start = take(pieces, head);
  const end = take([...pieces].reverse(), max - head - mark.length).reverse();
  return `${start.join('')}${mark}${end.join('')}`;
}

/** The longest input `quoted` shows, in characters as shown, before it cuts it. */
const QUOTED_MAX = 160;

/**
 * A user's input as an error message quotes it: in double quotes, as JSON would (a quote or a
 * backslash in it escaped, a control character as `\u001b`), cut in the middle with an ellipsis when
 * longer than QUOTED_MAX (a 100,000-character label is not written back whole; a long URL keeps its
 * beginning and its end).
 */
export function quoted(input: unknown): string {
  const pieces = Array.from(String(input), (char) =>
    char === '"' || char === '\\' ? `\\${char}` : shownChar(char),
  );
  return `"${cutMiddle(pieces, QUOTED_MAX, 110, '…')}"`;
}

/**
 * A stretch without spaces longer than this (input that was not `quoted`) is cut in its middle: the
 * longest path Linux takes (4096) is still shown whole, a hint must name a file a person can find.
 */
const RUN_MAX = 4096;
/**
 * A whole message or hint longer than this is cut in its middle: long enough for every account a
 * manager's grant reaches, listed for the choice of --account.
 */
const TEXT_MAX = 32_768;

/**
 * An error's message or hint as it may reach a terminal or a log, whatever input it echoes: its
 * unprintable characters escaped, an overlong stretch without spaces (then an overlong text) cut in
 * the middle with an ellipsis, keeping what the message says after the input.
 */
export function printable(text: string): string {
  const runs = text.replace(/\S+/g, (run) =>
    run.length <= RUN_MAX
      ? escapeUnprintable(run)
      : cutMiddle(Array.from(run, shownChar), RUN_MAX, 2800, '…'),
  );
  // Whitespace that is unprintable (a line break, a tab) is escaped here, after the runs.
  return cutMiddle(Array.from(runs, shownChar), TEXT_MAX, 20_000, ' … ');
}
