import pino from 'pino';
import { redact as redactText } from '../util/redact.js';

/**
 * The daemon's log: JSON lines (pino) when stderr is not a terminal, short human lines when it is.
 * Authorization headers and anything named like a token are redacted by pino as a second safety net;
 * messages never carry secrets in the first place.
 */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
  flush(): void;
}

const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'token',
  'access_token',
  'refresh_token',
  'client_secret',
  '*.token',
  '*.access_token',
  '*.refresh_token',
  '*.client_secret',
];

/** `keepUnder`: the folders whose paths log lines keep (see redact). */
export function createLogger(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  level = 'info',
  json?: boolean,
  keepUnder: readonly string[] = [],
): Logger {
  const redact = (text: string) => redactText(text, [], { keepUnder });
  if (json ?? !stream.isTTY) {
    const logger = pino(
      { level, base: { pid: process.pid }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
      stream,
    );
    // Field values (an error's message, say) are scrubbed like the message itself, as on a terminal.
    const scrub = (fields?: Record<string, unknown>) =>
      Object.fromEntries(
        Object.entries(fields ?? {}).map(([key, value]) => [
          key,
          typeof value === 'string' ? redact(value) : value,
        ]),
      );
    return {
      info: (message, fields) => logger.info(scrub(fields), redact(message)),
      warn: (message, fields) => logger.warn(scrub(fields), redact(message)),
      error: (message, fields) => logger.error(scrub(fields), redact(message)),
      debug: (message, fields) => logger.debug(scrub(fields), redact(message)),
      flush: () => logger.flush(),
    };
  }
  const debug = level === 'debug';
  const line = (tag: string, message: string, fields?: Record<string, unknown>) => {
    const extra = fields && Object.keys(fields).length ? ` ${redact(JSON.stringify(fields))}` : '';
    stream.write(`${new Date().toISOString().slice(11, 19)} ${tag} ${redact(message)}${extra}\n`);
  };
  return {
    info: (m, f) => line('info ', m, f),
    warn: (m, f) => line('warn ', m, f),
    error: (m, f) => line('error', m, f),
    debug: (m, f) => (debug ? line('debug', m, f) : undefined),
    flush: () => {},
  };
}
