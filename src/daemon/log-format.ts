import { fstatSync } from 'node:fs';
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
 * True when `stream` is connected to the systemd journal: systemd sets JOURNAL_STREAM to the device
 * and inode of the stream it connected (systemd.exec(5)), which a stream redirected since (`2>file`)
 * no longer is. Each line then starts with its syslog priority (`<3>` for an error, sd-daemon(3)),
 * which journald takes off and keeps as the entry's PRIORITY: `journalctl -u credvault -p warning`
 * finds the daemon's warnings and errors, which would otherwise all be logged at "info".
 */
export function toJournal(stream: object, env: NodeJS.ProcessEnv): boolean {
  const connected = env.JOURNAL_STREAM;
  const fd = (stream as { fd?: unknown }).fd;
  if (!connected || typeof fd !== 'number') return false;
  try {
    const { dev, ino } = fstatSync(fd, { bigint: true });
    return connected === `${dev}:${ino}`;
  } catch {
    return false;
  }
}

/** The syslog priority of a pino level: fatal 2 (crit), error 3, warn 4, info 6, debug 7. */
export function syslogPriority(level: number): number {
  return level >= FATAL ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/**
 * Reports why `credvault daemon` could not start as one line of its JSON log (pino's fields: level,
 * time, pid, msg), so that a log collector reading the daemon's JSON lines is not handed plain text at
 * the one moment it matters. The line carries the contract's error document too (`{"error":{"code",
 * "message"}}`, the message with its hint, as under --json) and the exit code. Redacted like every
 * other line of the daemon's log (and given its priority when it goes to the journal). Returns the
 * exit code.
 */
export function writeStartFailure(
  stream: { write(text: string): unknown },
  error: unknown,
  keepUnder: readonly string[],
  env: NodeJS.ProcessEnv,
): number {
  const known =
    error instanceof CredvaultError ? error : new InternalError(`unexpected failure: ${errorMessage(error)}`);
  const scrub = (text: string) => redact(printable(text), [], { keepUnder });
  const message = scrub(known.hint ? `${known.message}. ${known.hint}` : known.message);
  stream.write(
    `${toJournal(stream, env) ? `<${syslogPriority(FATAL)}>` : ''}${JSON.stringify({
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
