import pino from 'pino';
import { redact as redactText } from '../util/redact.js';
import { jsonLog, syslogPriority } from './log-format.js';

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

/**
 * `keepUnder`: the folders whose paths log lines keep (see redact). `journal`: the stream is the
 * systemd journal's (toJournal): each JSON line starts with its syslog priority.
 */
export function createLogger(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  level = 'info',
  json?: boolean,
  keepUnder: readonly string[] = [],
  journal = false,
): Logger {
  const redact = (text: string) => redactText(text, [], { keepUnder });
  if (jsonLog(stream, json)) {
    // pino writes each line within the call that logs it: the prefix is that call's level.
    let prefix = '';
    const destination = journal ? { write: (line: string) => stream.write(`${prefix}${line}`) } : stream;
    const logger = pino(
      {
        level,
        base: { pid: process.pid },
        redact: { paths: REDACT_PATHS, censor: '[redacted]' },
        ...(journal && {
          hooks: {
            logMethod(args, method, levelValue) {
              prefix = `<${syslogPriority(levelValue)}>`;
              method.apply(this, args);
            },
          },
        }),
      },
      destination,
    );
    // Field values (an error's message, say) are scrubbed like the message itself, as on a terminal:
    // those in lists and objects too (the connections a line names).
    const clean = (value: unknown): unknown =>
      typeof value === 'string'
        ? redact(value)
        : Array.isArray(value)
          ? value.map(clean)
          : value && typeof value === 'object' && !(value instanceof Date)
            ? Object.fromEntries(Object.entries(value).map(([key, v]) => [key, clean(v)]))
            : value;
    const scrub = (fields?: Record<string, unknown>) => clean(fields ?? {}) as Record<string, unknown>;
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

type Level = 'info' | 'warn' | 'error';

interface Window {
  level: Level;
  message: string;
  fields: Record<string, unknown>;
  /** Lines of this kind since the window opened, not logged. */
  count: number;
  openedAt: number;
  lengthMs: number;
  timer: NodeJS.Timeout;
}

/**
 * Lines that repeat (a failure that every request, or every sweep, meets again while the database is
 * down): the first of a kind is logged at once; the same kind again within the window that opens then
 * is only counted, and the count is logged as one line when the window ends ("… (299 more in the last
 * 10 s)"). Each window that had repeats is followed by one twice as long (10 s, 20 s, … 5 min), so a
 * long outage logs a line every five minutes; a window without any closes the kind, whose next line
 * is logged at once again. A kind that recurs on a period (a check every 15 s) needs a first window
 * longer than its period (`firstMs`), and its caller flushes it once the failure is over.
 */
export class RepeatedLines {
  readonly #log: Logger;
  readonly #firstMs: number;
  readonly #maxMs: number;
  readonly #windows = new Map<string, Window>();

  constructor(log: Logger, { firstMs = 10_000, maxMs = 300_000 }: { firstMs?: number; maxMs?: number } = {}) {
    this.#log = log;
    this.#firstMs = firstMs;
    this.#maxMs = maxMs;
  }

  /** Logs (or counts) a line of kind `key`: the message and fields of its first line are the kind's. */
  log(level: Level, key: string, message: string, fields: Record<string, unknown> = {}): void {
    const open = this.#windows.get(key);
    if (open) {
      open.count += 1;
      return;
    }
    this.#log[level](message, fields);
    this.#open(key, { level, message, fields }, this.#firstMs);
  }

  /** Logs what is counted for `key` (all kinds when none) now, and closes it. */
  flush(key?: string): void {
    for (const [k, window] of [...this.#windows]) {
      if (key !== undefined && k !== key) continue;
      clearTimeout(window.timer);
      this.#windows.delete(k);
      this.#summary(window);
    }
  }

  /** How many of kind `key` were counted and not logged yet. */
  pending(key: string): number {
    return this.#windows.get(key)?.count ?? 0;
  }

  #open(key: string, line: Pick<Window, 'level' | 'message' | 'fields'>, lengthMs: number): void {
    const timer = setTimeout(() => {
      const window = this.#windows.get(key)!;
      this.#windows.delete(key);
      if (this.#summary(window)) this.#open(key, line, Math.min(this.#maxMs, lengthMs * 2));
    }, lengthMs);
    timer.unref();
    this.#windows.set(key, { ...line, count: 0, openedAt: Date.now(), lengthMs, timer });
  }

  #summary(window: Window): boolean {
    if (!window.count) return false;
    const seconds = Math.max(1, Math.round((Date.now() - window.openedAt) / 1000));
    this.#log[window.level](`${window.message} (${window.count} more in the last ${seconds} s)`, {
      ...window.fields,
      repeated: window.count,
      window_seconds: seconds,
    });
    return true;
  }
}
