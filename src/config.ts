import { homedir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { InvalidInputError, quoted } from './errors.js';

/** Configuration: environment first, flags override (spec/cli.md, "Configuration"). */
export interface Config {
  home: string;
  databaseUrl: string | null;
  actor: string;
  json: boolean;
  color: boolean;
  verbose: boolean;
  /** How long to wait for the embedded database's lock before failing. */
  lockTimeoutMs: number;
  /** Deadline of one request to a platform (CREDVAULT_HTTP_TIMEOUT, seconds). */
  httpTimeoutMs: number;
  /**
   * The daemon's limit on one database statement (CREDVAULT_DB_TIMEOUT, seconds; 0: none): its
   * statement_timeout, a third of it for lock waits, and how long a connection may stay silent under
   * a statement before the daemon drops it (see db/client.ts, DatabaseDeadline).
   */
  dbTimeoutMs: number;
  /** The environment the key sources read (CREDENTIAL_MASTER_KEY, CREDENTIALS_DIRECTORY …). */
  env: NodeJS.ProcessEnv;
}

export interface GlobalFlags {
  databaseUrl?: string;
  home?: string;
  actor?: string;
  color?: boolean;
  json?: boolean;
  verbose?: boolean;
}

/**
 * The longest `--min-ttl` (`min_ttl`, `minTtl`) a caller may ask for: a year. LinkedIn's access tokens
 * live 60 days, so a week or a month is a fair request; one no refresh can meet gets the newest token
 * (services/tokens.ts).
 */
export const MAX_MIN_TTL_SECONDS = 365 * 86_400;

export function defaultHome(env: NodeJS.ProcessEnv): string {
  const xdg = env.XDG_DATA_HOME;
  if (xdg?.startsWith('/')) return join(xdg, 'credvault');
  return join(env.HOME || homedir(), '.local', 'share', 'credvault');
}

export function osUser(env: NodeJS.ProcessEnv): string {
  try {
    return userInfo().username;
  } catch {
    return env.USER || env.LOGNAME || 'unknown';
  }
}

function truthy(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

export function resolveConfig(flags: GlobalFlags, env: NodeJS.ProcessEnv): Config {
  const lockSeconds = env.CREDVAULT_LOCK_TIMEOUT ? Number(env.CREDVAULT_LOCK_TIMEOUT) : 5;
  if (!Number.isFinite(lockSeconds) || lockSeconds < 0) {
    throw new InvalidInputError(
      `CREDVAULT_LOCK_TIMEOUT must be a number of seconds (got ${quoted(env.CREDVAULT_LOCK_TIMEOUT)})`,
    );
  }
  const httpSeconds = env.CREDVAULT_HTTP_TIMEOUT ? Number(env.CREDVAULT_HTTP_TIMEOUT) : 15;
  if (!Number.isFinite(httpSeconds) || httpSeconds <= 0 || httpSeconds > 300) {
    throw new InvalidInputError(
      `CREDVAULT_HTTP_TIMEOUT must be seconds between 0 and 300 (got ${quoted(env.CREDVAULT_HTTP_TIMEOUT)})`,
    );
  }
  const dbSeconds = env.CREDVAULT_DB_TIMEOUT ? Number(env.CREDVAULT_DB_TIMEOUT) : 30;
  if (!Number.isFinite(dbSeconds) || dbSeconds < 0 || dbSeconds > 3600) {
    throw new InvalidInputError(
      `CREDVAULT_DB_TIMEOUT must be seconds between 0 (no limit) and 3600 (got ${quoted(env.CREDVAULT_DB_TIMEOUT)})`,
    );
  }
  const actor = (flags.actor ?? env.CREDVAULT_ACTOR ?? '').trim() || osUser(env);
  const noColor = flags.color === false || (env.NO_COLOR !== undefined && env.NO_COLOR !== '');
  return {
    // An empty CREDVAULT_HOME is unset, not the current directory.
    home: resolve((flags.home ?? env.CREDVAULT_HOME ?? '').trim() || defaultHome(env)),
    databaseUrl: (flags.databaseUrl ?? env.DATABASE_URL ?? '').trim() || null,
    actor,
    json: flags.json === true,
    color: !noColor,
    verbose: flags.verbose === true || truthy(env.CREDVAULT_DEBUG),
    lockTimeoutMs: lockSeconds * 1000,
    httpTimeoutMs: httpSeconds * 1000,
    dbTimeoutMs: Math.round(dbSeconds * 1000),
    env,
  };
}

export const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The longest duration taken anywhere: a hundred years (dates beyond stop being dates). */
const MAX_DURATION_MS = 36_500 * UNIT_MS.d!;

/** `90s`, `30m`, `12h`, `7d` (and `250ms`) → milliseconds; zero only where `zero` allows it. */
export function parseDuration(text: string, what: string, options: { zero?: boolean } = {}): number {
  const match = DURATION.exec(text.trim());
  if (!match) {
    throw new InvalidInputError(`${what} must be a duration like 90s, 30m, 12h or 7d (got ${quoted(text)})`);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  if (!(ms <= MAX_DURATION_MS)) {
    throw new InvalidInputError(`${what} is too long: at most 36500d, a hundred years (got ${quoted(text)})`);
  }
  if (ms === 0 && !options.zero)
    throw new InvalidInputError(`${what} must be longer than zero (got ${quoted(text)})`);
  return ms;
}
