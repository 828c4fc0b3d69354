import { dirname, resolve } from 'node:path';
import type { Config } from '../config.js';
import { errorMessage } from '../db/errors.js';
import { CredvaultError, InternalError, printable } from '../errors.js';
import { redact } from '../util/redact.js';

/**
 * What decides the daemon's log (shared by its logger and by the report of a start that failed, which
 * may come before the logger exists): JSON lines (pino's) when stderr is not a terminal or under
 * `--json`, short human lines at a terminal; and the folders whose paths its lines keep (see redact).
 */
export function jsonLog(stderr: { isTTY?: boolean }, json: boolean | undefined): boolean {
  return json ?? !stderr.isTTY;
}

/** Paths under these stay readable in the log (a key file named in a SIGHUP error, the socket). */
export function logFolders(config: Pick<Config, 'home' | 'env'>, socketPath?: string): string[] {
  return [
    config.home,
    config.env.CREDENTIALS_DIRECTORY,
    config.env.CREDENTIAL_MASTER_KEY_FILE && dirname(resolve(config.env.CREDENTIAL_MASTER_KEY_FILE)),
    socketPath ? dirname(socketPath) : undefined,
  ].filter((folder): folder is string => Boolean(folder && folder !== '/'));
}

/** pino's level for an error that ends the process. */
const FATAL = 60;

/**
 * Reports why `credvault daemon` could not start as one line of its JSON log (pino's fields: level,
 * time, pid, msg), so that a log collector reading the daemon's JSON lines is not handed plain text at
 * the one moment it matters. The line carries the contract's error document too (`{"error":{"code",
 * "message"}}`, the message with its hint, as under --json) and the exit code. Redacted like every
 * other line of the daemon's log. Returns the exit code.
 */
export function writeStartFailure(
  stream: { write(text: string): unknown },
  error: unknown,
  keepUnder: readonly string[],
): number {
  const known =
    error instanceof CredvaultError ? error : new InternalError(`unexpected failure: ${errorMessage(error)}`);
  const scrub = (text: string) => redact(printable(text), [], { keepUnder });
  const message = scrub(known.hint ? `${known.message}. ${known.hint}` : known.message);
  stream.write(
    `${JSON.stringify({
      level: FATAL,
      time: Date.now(),
      pid: process.pid,
      event: 'start_failed',
      error: { code: known.code, message },
      exit_code: known.exitCode,
      msg: `credvault daemon could not start: ${message}`,
    })}\n`,
  );
  return known.exitCode;
}
