import { ConflictError, CredvaultError, DatabaseError, InvalidInputError } from '../errors.js';

/** The driver error behind drizzle's wrapper (DrizzleQueryError keeps it as `cause`). */
function driverError(
  error: unknown,
): { code?: string; message?: string; constraint_name?: string; constraint?: string } | null {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; cause?: unknown };
    if (typeof candidate.code === 'string') return candidate as { code: string; message?: string };
    current = candidate.cause;
  }
  return null;
}

export function pgErrorCode(error: unknown): string | undefined {
  return driverError(error)?.code;
}

export function isUndefinedTable(error: unknown): boolean {
  const code = pgErrorCode(error);
  return code === '42P01' || code === '3F000';
}

/**
 * The audit log's primary key. The next record's id is the chain head's plus one: a row already there
 * is one credvault did not write (inserted past the head), which `audit verify` names.
 */
const AUDIT_KEY = 'credential_access_audit_pkey';

/** The constraint a unique violation broke (postgres.js: constraint_name; PGlite: constraint). */
function violatedConstraint(error: unknown): string | undefined {
  const driver = driverError(error);
  return driver?.constraint_name ?? driver?.constraint;
}

/** A unique violation of the caller's own write (a name taken): not the audit log's key (see AUDIT_KEY). */
export function isUniqueViolation(error: unknown): boolean {
  return pgErrorCode(error) === '23505' && violatedConstraint(error) !== AUDIT_KEY;
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  // A connection the other end closed, written to ("This socket has been ended by the other party").
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  '57P01', // admin_shutdown
  '57P03', // cannot_connect_now
  '3D000', // invalid_catalog_name: the database does not exist
  '28P01', // invalid_password
  '28000', // invalid_authorization_specification
  // A server that takes no connection now: too many clients, a crash restart, the database dropped
  // (and 55000 when it says so: see mapDatabaseError).
  '53300', // too_many_connections
  '57P02', // crash_shutdown
  '57P04', // database_dropped
  '08000', // connection_exception
  '08003', // connection_does_not_exist
  '08006', // connection_failure
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
]);

/** A driver error that says the database cannot be reached (or takes no connection now). */
function unreachable(driver: { code?: string; message?: string }): boolean {
  const code = driver.code ?? '';
  // A unix socket that went away under a connection (the daemon sharing the embedded database
  // stopped): ENOENT from the socket itself, not from a file.
  const syscall = (driver as { syscall?: unknown }).syscall;
  const socketGone = code === 'ENOENT' && (syscall === 'connect' || syscall === 'write');
  // object_not_in_prerequisite_state: at connection, "database … is not currently accepting
  // connections" (ALLOW_CONNECTIONS false); within a session it means other things (a sequence's
  // currval not yet defined…), which are not an unreachable database.
  const refusing = code === '55000' && /accepting connections/.test(driver.message ?? '');
  return CONNECTION_CODES.has(code) || socketGone || refusing;
}

/**
 * What a failure says of the database, for a log line, or null when it is not the database's:
 * unreachable (no connection, a connection dropped, refused), too slow (a statement cancelled by its
 * timeout), or refusing the operation (a privilege revoked, a trigger refusing a write). A
 * DatabaseError credvault raised after mapping one counts too.
 */
export function databaseFailure(error: unknown): string | null {
  const driver = driverError(error);
  const code = driver?.code;
  if (driver && code) {
    // A connection the daemon dropped because its answers stopped (DatabaseDeadline, db/client.ts).
    if (/^the database did not answer for /.test(driver.message ?? ''))
      return 'the database did not answer in time';
    if (unreachable(driver)) return 'the database is unreachable';
    if (code === '57014' || code === '55P03') return 'the database did not answer in time';
    // 42501: insufficient_privilege; P0001: an exception raised by a trigger or function.
    if (code === '42501' || code === 'P0001') return 'the database refused the operation';
  }
  if (error instanceof DatabaseError) {
    return error.message.startsWith('cannot reach the database')
      ? 'the database is unreachable'
      : 'the database failed';
  }
  return null;
}

/**
 * A failure as a command reports it: credvault's own error as it is, a driver's mapped to the
 * contract's (mapDatabaseError); null when it is neither (a bug).
 */
export function asReported(error: unknown, where: string): CredvaultError | null {
  return error instanceof CredvaultError ? error : mapDatabaseError(error, where);
}

/**
 * Turns a driver failure into the contract's error, or returns null when it is not one credvault
 * expects (a bug). Messages never include query parameters.
 */
export function mapDatabaseError(error: unknown, where: string): CredvaultError | null {
  const driver = driverError(error);
  if (!driver?.code) return null;
  const code = driver.code;
  if (unreachable(driver)) {
    const embedded = where.endsWith('/pgdata');
    // The URL may have come from DATABASE_URL or from --database-url: both are named.
    const url = 'the database URL (DATABASE_URL or --database-url)';
    return new DatabaseError(`cannot reach the database at ${where}: ${driver.message ?? code}`, {
      hint: embedded
        ? 'The daemon that shares the embedded database may have stopped: run the command again.'
        : code === '3D000'
          ? `Create the database (for example with createdb), then run \`credvault init\`; or check ${url}.`
          : code === '28P01' || code === '28000'
            ? `Check the user and password (in ${url}, or PGPASSWORD) and what pg_hba.conf allows.`
            : `Check ${url} and that PostgreSQL is running.`,
      cause: error,
    });
  }
  if (code === '42P01' || code === '42703' || code === '3F000') {
    return new DatabaseError(`the database at ${where} is not migrated (${driver.message ?? code})`, {
      hint: 'Run `credvault db migrate` (or `credvault init`).',
      cause: error,
    });
  }
  if (code === '23505' && violatedConstraint(error) === AUDIT_KEY) {
    return new ConflictError(
      'the audit log holds a record past the end of its chain, one credvault did not write: nothing that records to it can be done until it is removed; nothing was changed',
      {
        hint: 'Run `credvault audit verify` to see which, and compare with a backup of the database.',
        cause: error,
      },
    );
  }
  if (code === '23505') {
    return new ConflictError(`already exists (${violatedConstraint(error) ?? 'unique constraint'})`, {
      cause: error,
    });
  }
  if (code === '22021' || code === '22P05') {
    // A NUL character (or another byte PostgreSQL's text cannot hold) in something a person typed.
    return new InvalidInputError(
      'a value contains a character the database cannot store (a NUL character); remove it',
      { cause: error },
    );
  }
  if (code === '40001' || code === '40P01') {
    return new ConflictError('the change collided with another one; try again', { cause: error });
  }
  if (code === '42704' && /unrecognized configuration parameter/.test(driver.message ?? '')) {
    // postgres.js sends a DATABASE_URL query parameter it does not know itself as a setting of the
    // session, which the server refuses when it has no such setting (`?password=…`, a typo).
    return new DatabaseError(`the database at ${where} refused a setting: ${driver.message}`, {
      hint: 'DATABASE_URL has a query parameter that neither the driver nor PostgreSQL knows: remove it (a password goes before the host: postgres://USER:PASSWORD@HOST/DB).',
      cause: error,
    });
  }
  if (code === '53100') {
    // disk_full: "could not extend file …: No space left on device". Nothing of the statement that
    // failed was kept; the way out is the disk's owner's.
    const embedded = where.endsWith('/pgdata');
    return new DatabaseError(
      `the disk that holds the database at ${where} is full: ${driver.message ?? code}`,
      {
        hint: embedded
          ? `Free space on the disk that holds ${where.slice(0, -'/pgdata'.length)} (df -h ${where}), then try again.`
          : "Free space on the PostgreSQL server's data disk (its administrator), then try again.",
        cause: error,
      },
    );
  }
  if (code === '22023' && /^invalid value for parameter/.test(driver.message ?? '')) {
    // A session setting in DATABASE_URL's query (`?statement_timeout=abc`): credvault sets none of its
    // own that could be refused, so the URL is what to change.
    return new InvalidInputError(`DATABASE_URL sets what the database refuses: ${driver.message}`, {
      hint: 'Correct or remove that query parameter of DATABASE_URL (statement_timeout takes milliseconds: ?statement_timeout=5000).',
      cause: error,
    });
  }
  if (code === '42501') {
    return new DatabaseError(`the database refused the operation: ${driver.message ?? code}`, {
      cause: error,
    });
  }
  return null;
}

/**
 * An error's message fit to show or log: drizzle's wrapper puts the whole query and its parameters
 * in its own ("Failed query: …"), so for that the driver's message is used instead.
 */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    if (error.message.startsWith('Failed query:')) {
      return cause instanceof Error ? cause.message : 'a database query failed';
    }
    return error.message;
  }
  return String(error);
}
