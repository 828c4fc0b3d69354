import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SQL } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type { Options as PostgresOptions, PostgresType } from 'postgres';
import { type CredvaultError, DatabaseError, InvalidInputError } from '../errors.js';
import * as schema from './schema/index.js';

export type Schema = typeof schema;
/** A database handle or a transaction: stores take either. */
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

/**
 * `pglite`: the embedded database, opened in this process. `postgres`: a PostgreSQL server, or the
 * embedded database served by a running daemon on its unix socket (`shared`).
 */
export type DatabaseKind = 'pglite' | 'postgres';

/** How to open another connection to the same database (migrations use their own). */
export type ConnectTarget = { url: string } | { socket: string };

export interface Database {
  readonly db: Db;
  readonly kind: DatabaseKind;
  /** The embedded database, reached through the daemon that holds it. */
  readonly shared: boolean;
  /** Where the database is, for messages; never carries a password. */
  readonly description: string;
  readonly target: ConnectTarget | null;
  /** Runs plain SQL and returns its rows, whatever the driver. */
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /**
   * LISTEN on a channel (PostgreSQL servers only), on a connection of its own that the driver opens
   * again when it drops; `onListen` runs each time the LISTEN is in place (the first time and after
   * every reconnection). Resolves to a function that stops listening.
   */
  listen?(
    channel: string,
    onPayload: (payload: string) => void,
    onListen?: () => void,
  ): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** `postgres://…`; null selects the embedded database under `home`. */
  url: string | null;
  home: string;
  lockTimeoutMs: number;
  /** Connections in the pool (PostgreSQL only). */
  poolSize?: number;
  /** Name reported to PostgreSQL (pg_stat_activity). */
  applicationName?: string;
  /** Never go through a running daemon's socket (the daemon itself opens the files). */
  direct?: boolean;
  /** Make the embedded database when there is none (`init`, `db migrate`); else that is an error. */
  create?: boolean;
}

/**
 * A data folder that cannot be one (`CREDVAULT_HOME` naming a file, or a path through a file or a
 * folder this user may not search), or null when it is a folder or can be made.
 */
export function homeProblem(home: string): InvalidInputError | null {
  const hint =
    'Point CREDVAULT_HOME (or --home) at a folder: credvault keeps its database, key and run files there.';
  try {
    // Not `throwIfNoEntry: false`: since Node 22 it also hides ENOTDIR (a path through a file), which
    // is to be reported, not taken for a folder still to be made.
    const stat = statSync(home);
    if (stat.isDirectory()) return null;
    return new InvalidInputError(`the data folder ${home} is not a folder`, { hint });
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') return null;
    if (code !== 'ENOTDIR' && code !== 'EACCES' && code !== 'ELOOP') throw error;
    return new InvalidInputError(`the data folder ${home} cannot be used (${code})`, { hint });
  }
}

/** Refuses a `home` without an embedded database: commands (the daemon too) never make one. */
export function requireEmbeddedVault(home: string): void {
  const dir = embeddedDataDir(home);
  if (existsSync(dir)) return;
  // existsSync is false for a folder this user may not look into, too: say that, not "no vault".
  try {
    statSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new DatabaseError(`the vault at ${home} cannot be read by this user (${code})`, {
        hint: 'Run credvault as the user that owns the data folder (the daemon’s, under systemd), or point CREDVAULT_HOME at your own.',
      });
    }
  }
  throw noVaultError(home);
}

/** Why a command finds no embedded database at `home` (it makes none: only `init` does). */
function noVaultError(home: string): CredvaultError {
  return (
    homeProblem(home) ??
    new DatabaseError(`there is no vault at ${home} (no embedded database, and DATABASE_URL is not set)`, {
      hint: 'Run `credvault init` to make one, or point CREDVAULT_HOME or DATABASE_URL at the vault you mean.',
    })
  );
}

/** `postgres://user:secret@host:5432/db` → `postgres://user@host:5432/db`. */
/**
 * The rows of a raw statement: postgres.js answers an array of rows, PGlite an object with `rows`.
 */
export async function executeRows<T>(db: Db, query: SQL): Promise<T[]> {
  const result = (await db.execute(query)) as unknown as { rows?: T[] } | T[];
  return Array.isArray(result) ? result : (result.rows ?? []);
}

export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.toString();
  } catch {
    return 'an unparsable DATABASE_URL';
  }
}

export function embeddedDataDir(home: string): string {
  return join(home, 'pgdata');
}

/** Where a daemon running on the embedded database serves it (a 0600 socket in a 0700 folder). */
export function embeddedSocketPath(home: string): string {
  return join(home, 'run', '.s.PGSQL.5432');
}

export async function openDatabase(options: OpenOptions): Promise<Database> {
  if (options.url) return openPostgres({ url: options.url }, options);
  if (!options.direct) {
    const socket = embeddedSocketPath(options.home);
    if (existsSync(socket)) {
      // A daemon holds the embedded database: every other command goes through it, not "locked".
      const shared = await openPostgres({ socket }, options).catch(() => null);
      if (shared) {
        try {
          await shared.query('select 1');
          return shared;
        } catch {
          await shared.close().catch(() => {});
        }
      }
    }
  }
  if (!options.create) requireEmbeddedVault(options.home);
  return openEmbedded(options.home, options.lockTimeoutMs);
}

export function postgresOptions(target: ConnectTarget): PostgresOptions<Record<string, PostgresType>> {
  if ('url' in target) return {};
  // Every connection to the daemon's socket shares PGlite's one session, so named prepared
  // statements of different connections would collide: unnamed statements only.
  return { path: target.socket, user: 'postgres', database: 'postgres', prepare: false };
}

type Sql = import('postgres').Sql<Record<string, PostgresType>>;

/**
 * The client drizzle gets: the same, except that its statements are named prepared statements.
 * drizzle asks postgres.js for unnamed ones, which cost a second round trip each (Parse and Describe,
 * then Bind and Execute); prepared, a statement is parsed once per connection and then costs one.
 * The connection's own setting still rules: `?prepare=false` in DATABASE_URL (for a pooler in
 * transaction mode) and the daemon's socket (one shared PGlite session) keep unnamed statements.
 */
function preparing(sql: Sql): Sql {
  return new Proxy(sql, {
    get(target, property, receiver) {
      if (property === 'unsafe') {
        return (query: string, params?: never[], options?: object) =>
          target.unsafe(query, params, { ...options, prepare: true });
      }
      if (property === 'begin' || property === 'savepoint') {
        return (...args: unknown[]) => {
          const fn = args.pop() as (inner: Sql) => unknown;
          return (Reflect.get(target, property) as (...a: unknown[]) => unknown)(...args, (inner: Sql) =>
            fn(preparing(inner)),
          );
        };
      }
      return Reflect.get(target, property, receiver);
    },
  });
}

async function openPostgres(target: ConnectTarget, options: OpenOptions): Promise<Database> {
  if ('url' in target && !/^postgres(ql)?:\/\//.test(target.url)) {
    // Input to change (exit 2), not a database that could not be reached.
    throw new InvalidInputError(
      `DATABASE_URL must start with postgres:// or postgresql:// (got ${redactUrl(target.url)})`,
      { hint: 'Unset DATABASE_URL to use the embedded database.' },
    );
  }
  const [{ default: postgres }, { drizzle }] = await Promise.all([
    import('postgres'),
    import('drizzle-orm/postgres-js'),
  ]);
  const settings: PostgresOptions<Record<string, PostgresType>> = {
    ...postgresOptions(target),
    max: options.poolSize ?? 4,
    onnotice: () => {},
    connect_timeout: 'url' in target ? 10 : 2,
    // No round trip on connect to learn custom array types: credvault uses none.
    fetch_types: false,
    idle_timeout: 30,
    connection: { application_name: options.applicationName ?? 'credvault' },
  };
  const client = 'url' in target ? postgres(target.url, settings) : postgres(settings);
  const db = drizzle({ client: preparing(client), schema }) as unknown as Db;
  return {
    db,
    kind: 'postgres',
    shared: 'socket' in target,
    description:
      'url' in target
        ? redactUrl(target.url)
        : `${embeddedDataDir(join(target.socket, '..', '..'))} (through the daemon)`,
    target,
    async query<T>(text: string, params: unknown[] = []) {
      return (await client.unsafe(text, params as never[])) as unknown as T[];
    },
    async listen(channel, onPayload, onListen) {
      const { unlisten } = await client.listen(channel, onPayload, onListen);
      return unlisten;
    },
    async close() {
      await client.end({ timeout: 5 });
    },
  };
}

/**
 * Settings of the embedded database, wherever it is opened: a log segment that is no longer needed
 * is deleted, not renamed for reuse with its old contents (see db/shred.ts).
 */
export const EMBEDDED_SETTINGS = ['-c', 'wal_recycle=off'];

/**
 * Settings of the embedded database opened by a command for one action (not by the daemon).
 * PostgreSQL's default 128 MB of shared buffers is zeroed in WebAssembly memory at every start: about
 * 350 ms and 130 MB of memory per command, for a cache a one-shot command barely fills (re-encrypting,
 * listing or verifying a vault of 15,000 grants took as long with 16 MB as with 128). The daemon,
 * which keeps the database open for everyone, keeps the default.
 */
export const COMMAND_SETTINGS = [...EMBEDDED_SETTINGS, '-c', 'shared_buffers=16MB'];

async function openEmbedded(home: string, lockTimeoutMs: number): Promise<Database> {
  const problem = homeProblem(home);
  if (problem) throw problem;
  const { acquireDatabaseLock } = await import('./lock.js');
  const dataDir = embeddedDataDir(home);
  const lock = await acquireDatabaseLock(home, lockTimeoutMs, dataDir);
  try {
    const [{ PGlite }, { drizzle }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('drizzle-orm/pglite'),
    ]);
    const client = new PGlite(dataDir, { startParams: [...PGlite.defaultStartParams, ...COMMAND_SETTINGS] });
    await client.waitReady;
    const db = drizzle({ client, schema }) as unknown as Db;
    return {
      db,
      kind: 'pglite',
      shared: false,
      description: dataDir,
      target: null,
      async query<T>(text: string, params: unknown[] = []) {
        return (await client.query<T>(text, params)).rows;
      },
      async close() {
        try {
          await client.close();
        } finally {
          lock.release();
        }
      },
    };
  } catch (error) {
    lock.release();
    throw error;
  }
}
