import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import type { SQL } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import type { Options as PostgresOptions, PostgresType } from 'postgres';
import { type CredvaultError, DatabaseError, InvalidInputError } from '../errors.js';
import { type PostgresConnection, readDatabaseUrl, urlWithoutPassword } from '../util/database-url.js';
import { type ChangeListener, type ListenHandlers, PostgresListener } from './listener.js';
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
   * LISTEN on a channel (PostgreSQL servers only), on a connection of its own that is opened again
   * whenever it drops, and that says whether it listens (see PostgresListener). Starts at once.
   */
  listen?(channel: string, handlers: ListenHandlers): ChangeListener;
  close(): Promise<void>;
  /** What waits on the database now, when `deadlineMs` was given, 0 too (for the daemon's shutdown message). */
  readonly waiting?: () => { count: number; oldestMs: number };
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
  /**
   * The daemon's limit on one statement (Config.dbTimeoutMs; see DatabaseDeadline). 0: none, the
   * statements still tracked (Database.waiting). Unset: neither, as for the commands, whose work a
   * person or a job waits for, and some of which (`key rotate --reencrypt`, a migration) may take long.
   */
  deadlineMs?: number;
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
  // PG_VERSION is the database's first file to be whole: a folder without it (left by an `init` that
  // was stopped early) would be made into a new, empty database by any command that opened it.
  if (existsSync(join(dir, 'PG_VERSION'))) return;
  if (existsSync(dir)) {
    throw new DatabaseError(
      `the data folder ${home} holds an unfinished embedded database (${dir} has no PG_VERSION: an \`init\` stopped before it finished?)`,
      { hint: 'Run `credvault init` to finish it.' },
    );
  }
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

/** The name /etc/passwd gives `uid`, or null (no such line, no such file). */
function userName(uid: number): string | null {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id === String(uid)) return name;
    }
  } catch {
    // No /etc/passwd (or not readable): the uid alone names the owner.
  }
  return null;
}

/**
 * Refuses to open the embedded database of another user (`sudo credvault doctor` on a service's
 * vault): PGlite rewrites some of its files on every start, as this process's user and 0600, after
 * which the owner's own commands and daemon fail to start it. The embedded data folder decides, else
 * (none yet) the home. Going through the owner's running daemon is not affected: that path never
 * opens the files.
 */
export function requireOwnVault(home: string): void {
  const uid = process.getuid?.();
  if (uid === undefined) return;
  for (const path of [embeddedDataDir(home), home]) {
    let owner: number;
    try {
      owner = statSync(path).uid;
    } catch {
      continue;
    }
    if (owner === uid) return;
    const name = userName(owner);
    const who = name ? `${name} (uid ${owner})` : `uid ${owner}`;
    const sudoUser = name ?? `#${owner}`;
    throw new DatabaseError(
      `the vault at ${home} belongs to ${who}, not to this user (uid ${uid}): opening its embedded database as this user would leave files its owner cannot read`,
      {
        hint: `Run the command as its owner (sudo -u ${sudoUser} credvault …), or start the owner's daemon (credvault daemon, as ${name ?? `uid ${owner}`}): commands then go through its socket and open no files.`,
      },
    );
  }
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
  return urlWithoutPassword(url) ?? 'an unparsable DATABASE_URL';
}

/** The database as messages name it: its URL without the password, or the embedded data folder. */
export function databaseWhere(config: { databaseUrl?: string | null; home: string }): string {
  return config.databaseUrl ? redactUrl(config.databaseUrl) : `${config.home}/pgdata`;
}

export function embeddedDataDir(home: string): string {
  return join(home, 'pgdata');
}

/**
 * The embedded database's folder, made (or kept) 0700 before PGlite opens it: PGlite writes its files
 * world-readable and -writable (0666, whatever the umask), so the folder is what keeps other local
 * users out, in a home that `init` did not make 0700 (one a CI job made with mkdir, say).
 */
export function guardDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    if ((statSync(dataDir).mode & 0o077) !== 0) chmodSync(dataDir, 0o700);
  } catch (error) {
    // Another user's folder this one may only use: theirs to keep closed.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
  }
}

/** Where a daemon running on the embedded database serves it (a 0600 socket in a 0700 folder). */
export function embeddedSocketPath(home: string): string {
  return join(home, 'run', '.s.PGSQL.5432');
}

export async function openDatabase(options: OpenOptions): Promise<Database> {
  if (options.url) return openPostgres({ url: options.url }, options);
  // A daemon holds the embedded database: every other command goes through it, not "locked". Also
  // when the daemon starts while the command waits for the lock (a restart under systemd): the wait
  // ends as soon as its socket answers.
  const viaDaemon = options.direct ? null : () => openThroughDaemon(options);
  const shared = await viaDaemon?.();
  if (shared) return shared;
  if (!options.create) requireEmbeddedVault(options.home);
  return openEmbedded(options.home, options.lockTimeoutMs, viaDaemon);
}

/** The embedded database through the daemon's socket, when a daemon serves it there; else null. */
async function openThroughDaemon(options: OpenOptions): Promise<Database | null> {
  const socket = embeddedSocketPath(options.home);
  if (!existsSync(socket)) return null;
  const shared = await openPostgres({ socket }, options).catch(() => null);
  if (!shared) return null;
  try {
    await shared.query('select 1');
    return shared;
  } catch {
    await shared.close().catch(() => {});
    return null;
  }
}

/**
 * DATABASE_URL as postgres.js is to be given it (see readDatabaseUrl); one it cannot read is input to
 * change (exit 2), named without its password.
 */
export function postgresConnection(url: string): PostgresConnection {
  if (!/^postgres(ql)?:\/\//.test(url)) {
    // Input to change (exit 2), not a database that could not be reached.
    throw new InvalidInputError(
      `DATABASE_URL must start with postgres:// or postgresql:// (got ${redactUrl(url)})`,
      { hint: 'Unset DATABASE_URL to use the embedded database.' },
    );
  }
  const read = readDatabaseUrl(url);
  if ('problem' in read) throw new InvalidInputError(read.problem, { hint: read.hint });
  return read;
}

export function postgresOptions(target: ConnectTarget): PostgresOptions<Record<string, PostgresType>> {
  if ('url' in target) {
    const { host, port, path } = postgresConnection(target.url);
    return { ...(host && port ? { host, port } : {}), ...(path ? { path } : {}) } as PostgresOptions<
      Record<string, PostgresType>
    >;
  }
  // Every connection to the daemon's socket shares PGlite's one session, so named prepared
  // statements of different connections would collide: unnamed statements only.
  return { path: target.socket, user: 'postgres', database: 'postgres', prepare: false };
}

type Sql = import('postgres').Sql<Record<string, PostgresType>>;

/** A statement that waits for the database: call it once answered. */
type Done = () => void;

/**
 * Keeps the daemon's waits for the database bounded. On a PostgreSQL server, statement_timeout and
 * lock_timeout (set by openPostgres) end a statement that runs or waits for a lock too long. Nothing on
 * the server ends a wait for a connection whose answers no longer arrive: a network partition, a
 * server that took the connection and then hung. TCP gives up on those only after many minutes (never,
 * through a proxy that keeps accepting). So every statement is tracked from when it is sent until it is
 * answered, and every connection by when it last received a byte; once a statement has waited longer
 * than `limitMs`, the connections that have received nothing for that long are dropped. That fails the
 * statements they carry (postgres.js opens new connections for the next ones). A connection that was
 * merely idle meanwhile (none is, for that long, unless a transaction stays open) is opened again when
 * it is needed. On the embedded database reached through the daemon's socket, where a command holding
 * PGlite's one session makes the daemon's statements wait their turn, the same applies.
 */
export class DatabaseDeadline {
  readonly limitMs: number;
  readonly #sockets = new Map<Socket, { bytes: number; at: number }>();
  readonly #waiting = new Map<number, number>();
  #next = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(limitMs: number) {
    this.limitMs = limitMs;
  }

  /**
   * postgres.js's `socket` option: the connection it would open itself, opened here so that it can be
   * watched (postgres.js writes its startup message on it at once; Node sends it once connected). Its
   * byte count is read, not its events: under TLS the bytes pass through it without 'data' events.
   */
  readonly socket = (options: { host: string[]; port: number[]; path?: string | false }): Socket => {
    let socket: Socket;
    if (options.path) {
      socket = createConnection(options.path);
    } else {
      const [host, port] = [options.host[0]!, options.port[0]!];
      socket = createConnection(port, host);
      // What postgres.js sets on a socket it opens (its errors name them).
      Object.assign(socket, { host, port });
    }
    this.#sockets.set(socket, { bytes: 0, at: Date.now() });
    this.#watch();
    return socket;
  };

  /** A statement sent: the returned function says it was answered (or failed). */
  track(): Done {
    const id = this.#next++;
    this.#waiting.set(id, Date.now());
    this.#watch();
    return () => {
      this.#waiting.delete(id);
    };
  }

  /** How many statements wait, and for how long the oldest has. */
  waiting(): { count: number; oldestMs: number } {
    let oldest = Number.POSITIVE_INFINITY;
    for (const since of this.#waiting.values()) oldest = Math.min(oldest, since);
    return { count: this.#waiting.size, oldestMs: this.#waiting.size ? Date.now() - oldest : 0 };
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  #watch(): void {
    if (this.#timer || this.limitMs === Number.POSITIVE_INFINITY) return;
    this.#timer = setInterval(() => this.#check(), Math.min(1000, Math.max(50, this.limitMs / 4)));
    this.#timer.unref();
  }

  #check(): void {
    const now = Date.now();
    for (const [socket, seen] of this.#sockets) {
      if (socket.destroyed) {
        this.#sockets.delete(socket);
      } else if (socket.bytesRead !== seen.bytes) {
        seen.bytes = socket.bytesRead;
        seen.at = now;
      }
    }
    if (this.waiting().oldestMs <= this.limitMs) return;
    for (const [socket, seen] of this.#sockets) {
      if (now - seen.at <= this.limitMs) continue;
      this.#sockets.delete(socket);
      const error = Object.assign(
        new Error(
          `the database did not answer for ${Math.round((now - seen.at) / 1000)} s; connection dropped`,
        ),
        { code: 'CONNECTION_DESTROYED' },
      );
      socket.destroy(error);
    }
  }
}

/**
 * The client drizzle gets: the same, except that its statements are named prepared statements.
 * drizzle asks postgres.js for unnamed ones, which cost a second round trip each (Parse and Describe,
 * then Bind and Execute); prepared, a statement is parsed once per connection and then costs one.
 * The connection's own setting still rules: `?prepare=false` in DATABASE_URL (for a pooler in
 * transaction mode) and the daemon's socket (one shared PGlite session) keep unnamed statements.
 * With a `deadline`, every statement is tracked until it is answered, a transaction's BEGIN (until
 * its work starts) and its COMMIT or ROLLBACK (from when its work ends) included.
 */
function preparing(sql: Sql, deadline?: DatabaseDeadline): Sql {
  return new Proxy(sql, {
    get(target, property, receiver) {
      if (property === 'unsafe') {
        return (query: string, params?: never[], options?: object) =>
          tracked(target.unsafe(query, params, { ...options, prepare: true }), deadline);
      }
      if (property === 'begin' || property === 'savepoint') {
        return (...args: unknown[]) => {
          const fn = args.pop() as (inner: Sql) => unknown;
          const opening = deadline?.track();
          let closing: Done | undefined;
          const result = (Reflect.get(target, property) as (...a: unknown[]) => Promise<unknown>)(
            ...args,
            (inner: Sql) => {
              opening?.();
              const work = fn(preparing(inner, deadline));
              if (!deadline || Array.isArray(work)) return work;
              return Promise.resolve(work).finally(() => {
                closing = deadline.track();
              });
            },
          );
          if (!deadline) return result;
          const settle = () => {
            opening?.();
            closing?.();
          };
          result.then(settle, settle);
          return result;
        };
      }
      return Reflect.get(target, property, receiver);
    },
  });
}

/** A postgres.js query, tracked until it settles (its `then` sends it; drizzle awaits it at once). */
function tracked<Q extends Promise<unknown>>(query: Q, deadline?: DatabaseDeadline): Q {
  if (!deadline) return query;
  const done = deadline.track();
  query.then(done, done);
  return query;
}

/**
 * The server's side of the daemon's limit (see DatabaseDeadline), set when each connection starts:
 * a statement ends after `deadlineMs` (statement_timeout) and a wait for a lock after a third of it
 * (lock_timeout, so that a table locked by someone else is reported as that), and a transaction left
 * idle after twice it. Values given in
 * DATABASE_URL's query (`?statement_timeout=…`) win. Not through a pooler in transaction mode
 * (`?prepare=false`, which it needs), which refuses startup parameters it does not know: set them on
 * the role there (`ALTER ROLE … SET statement_timeout = …`).
 */
function serverLimits(url: string, deadlineMs: number): Record<string, number> {
  if (URL.canParse(url) && new URL(url).searchParams.get('prepare') === 'false') return {};
  return {
    statement_timeout: deadlineMs,
    lock_timeout: Math.max(1, Math.round(deadlineMs / 3)),
    // A transaction of the daemon's left idle that long is one whose connection is gone (a partition):
    // the server ends it rather than keep its locks, which the daemon's next connections would wait for.
    idle_in_transaction_session_timeout: 2 * deadlineMs,
  };
}

async function openPostgres(target: ConnectTarget, options: OpenOptions): Promise<Database> {
  const connection = 'url' in target ? postgresConnection(target.url) : null;
  const [{ default: postgres }, { drizzle }] = await Promise.all([
    import('postgres'),
    import('drizzle-orm/postgres-js'),
  ]);
  // One host only: postgres.js tries the hosts of a multi-host URL in turn itself, which a socket
  // opened here would not; those connections keep the server's limits only.
  // With no limit (0) the statements are still tracked, for the daemon's shutdown to say what it left.
  const limited =
    Boolean(options.deadlineMs) && ('socket' in target || !/^postgres(ql)?:\/\/[^/?#]*,/.test(target.url));
  const deadline =
    options.deadlineMs === undefined
      ? undefined
      : new DatabaseDeadline(
          limited ? options.deadlineMs + Math.min(5000, options.deadlineMs) : Number.POSITIVE_INFINITY,
        );
  const settings: PostgresOptions<Record<string, PostgresType>> = {
    ...postgresOptions(target),
    max: options.poolSize ?? 4,
    onnotice: () => {},
    // Within the daemon's limit too: a connection that does not start is one more wait.
    connect_timeout: Math.min('url' in target ? 10 : 2, options.deadlineMs ? options.deadlineMs / 1000 : 10),
    // No round trip on connect to learn custom array types: credvault uses none.
    fetch_types: false,
    idle_timeout: 30,
    connection: {
      application_name: options.applicationName ?? 'credvault',
      // Not on the daemon's socket: every connection there shares PGlite's one session.
      ...(connection && options.deadlineMs ? serverLimits(connection.url, options.deadlineMs) : {}),
    },
    ...(deadline && limited ? { socket: deadline.socket } : {}),
  } as PostgresOptions<Record<string, PostgresType>>;
  const client = connection ? postgres(connection.url, settings) : postgres(settings);
  const db = drizzle({ client: preparing(client, deadline), schema }) as unknown as Db;
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
      return (await tracked(client.unsafe(text, params as never[]), deadline)) as unknown as T[];
    },
    listen(channel, handlers) {
      // A connection of its own, named apart in pg_stat_activity, on a socket the listener opens (not
      // the deadline's: the listener drops a connection that stops answering itself).
      const open = (overrides: Partial<PostgresOptions<Record<string, PostgresType>>>) => {
        const merged = {
          ...settings,
          ...overrides,
          connection: {
            ...settings.connection,
            application_name: `${options.applicationName ?? 'credvault'}-listen`,
          },
        } as PostgresOptions<Record<string, PostgresType>>;
        return connection ? postgres(connection.url, merged) : postgres(merged);
      };
      return new PostgresListener(open, channel, handlers);
    },
    async close() {
      try {
        await client.end({ timeout: 5 });
      } finally {
        deadline?.close();
      }
    },
    ...(deadline ? { waiting: () => deadline.waiting() } : {}),
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
 * listing or verifying a vault of 15,000 grants took as long with 16 MB as with 128).
 */
export const COMMAND_SETTINGS = [...EMBEDDED_SETTINGS, '-c', 'shared_buffers=16MB'];

/**
 * Settings of the embedded database the daemon keeps open for everyone. 32 MB of shared buffers, not
 * the default 128: the files' pages are in the operating system's cache anyway, and a sweep of 10,000
 * grants took 10.2 s and 12.6–12.7 CPU-s with 32 MB against 10.8–11.8 s and 13.4–14.7 CPU-s with 128,
 * at 318–333 MB of peak memory against 409–412 (idle, 228–254 MB against 343).
 */
export const DAEMON_SETTINGS = [...EMBEDDED_SETTINGS, '-c', 'shared_buffers=32MB'];

/** The embedded database this process has open in one data folder, and the handles that use it. */
interface EmbeddedOpen {
  /** The PGlite instance, or null when the folder turned out to be served by a daemon. */
  opening: Promise<{ db: Db; query: Database['query']; close: () => Promise<void> } | null>;
  handles: number;
}

/**
 * The embedded databases open in this process, by data folder. PGlite holds its folder alone, and
 * the lock file keeps other processes out; within one process, every handle of the folder (two
 * modules of an application, each calling `openVault()`) shares the one PGlite, which the last
 * handle's `close()` closes. Sound because PGlite runs every statement and every transaction of an
 * instance under one mutex (`query` and `exec` wait for a running `transaction` to end; drizzle's
 * transactions are PGlite's), so the handles' transactions never interleave, and credvault keeps no
 * session state (no SET, no temporary tables, no session advisory locks: the refresh lease is a row
 * with a per-request owner).
 */
const embeddedOpen = new Map<string, EmbeddedOpen>();
/** Folders whose last handle is closing: a new open waits for the close (and the lock's release). */
const embeddedClosing = new Map<string, Promise<void>>();

function embeddedKey(home: string): string {
  try {
    return realpathSync(home);
  } catch {
    return resolve(home);
  }
}

async function openEmbedded(
  home: string,
  lockTimeoutMs: number,
  viaDaemon: (() => Promise<Database | null>) | null,
): Promise<Database> {
  const problem = homeProblem(home);
  if (problem) throw problem;
  requireOwnVault(home);
  const key = embeddedKey(home);
  await embeddedClosing.get(key);
  const dataDir = embeddedDataDir(home);
  let entry = embeddedOpen.get(key);
  let daemon: Database | null = null;
  if (!entry) {
    const through: { daemon: Database | null } = { daemon: null };
    const created: EmbeddedOpen = {
      handles: 0,
      opening: startEmbedded(home, dataDir, lockTimeoutMs, viaDaemon, through).then((opened) => {
        daemon = through.daemon;
        return opened;
      }),
    };
    entry = created;
    embeddedOpen.set(key, created);
    // Failed, or served by a daemon: nothing stays open here for the next handle.
    const forget = () => {
      if (embeddedOpen.get(key) === created) embeddedOpen.delete(key);
    };
    created.opening.then((opened) => opened ?? forget(), forget);
  }
  // Counted before the wait: the last other handle closing meanwhile must not close it under this one.
  const shared = entry;
  shared.handles += 1;
  let opened: Awaited<EmbeddedOpen['opening']>;
  try {
    opened = await shared.opening;
  } catch (error) {
    shared.handles -= 1;
    throw error;
  }
  if (!opened) {
    shared.handles -= 1;
    // A daemon serves the folder: the first opener has its connection; any other makes its own.
    if (daemon) return daemon;
    return openEmbedded(home, lockTimeoutMs, viaDaemon);
  }
  let closed: Promise<void> | null = null;
  return {
    db: opened.db,
    kind: 'pglite',
    shared: false,
    description: dataDir,
    target: null,
    query: opened.query,
    close() {
      closed ??= (async () => {
        shared.handles -= 1;
        if (shared.handles > 0) return;
        if (embeddedOpen.get(key) === shared) embeddedOpen.delete(key);
        const closing = opened.close();
        const settled = closing.catch(() => {});
        embeddedClosing.set(key, settled);
        try {
          await closing;
        } finally {
          if (embeddedClosing.get(key) === settled) embeddedClosing.delete(key);
        }
      })();
      return closed;
    },
  };
}

/** Opens the embedded database under its lock; null when a daemon started serving it meanwhile. */
async function startEmbedded(
  home: string,
  dataDir: string,
  lockTimeoutMs: number,
  viaDaemon: (() => Promise<Database | null>) | null,
  through: { daemon: Database | null },
): Promise<{ db: Db; query: Database['query']; close: () => Promise<void> } | null> {
  const { acquireDatabaseLock } = await import('./lock.js');
  const lock = await acquireDatabaseLock(
    home,
    lockTimeoutMs,
    dataDir,
    viaDaemon &&
      (async () => {
        through.daemon = await viaDaemon();
        return through.daemon !== null;
      }),
  );
  if (!lock) return null;
  try {
    const [{ PGlite }, { drizzle }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('drizzle-orm/pglite'),
    ]);
    guardDataDir(dataDir);
    const client = new PGlite(dataDir, { startParams: [...PGlite.defaultStartParams, ...COMMAND_SETTINGS] });
    await client.waitReady;
    const db = drizzle({ client, schema }) as unknown as Db;
    return {
      db,
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
