import { join } from 'node:path';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { DatabaseError } from '../errors.js';
import * as schema from './schema/index.js';

export type Schema = typeof schema;
/** A database handle or a transaction: stores take either. */
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

export type DatabaseKind = 'pglite' | 'postgres';

export interface Database {
  readonly db: Db;
  readonly kind: DatabaseKind;
  /** Where the database is, for messages; never carries a password. */
  readonly description: string;
  /** Runs plain SQL and returns its rows, whatever the driver. */
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
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
}

/** `postgres://user:secret@host:5432/db` → `postgres://user@host:5432/db`. */
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

export async function openDatabase(options: OpenOptions): Promise<Database> {
  if (options.url) return openPostgres(options.url, options);
  return openEmbedded(options.home, options.lockTimeoutMs);
}

async function openPostgres(url: string, options: OpenOptions): Promise<Database> {
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new DatabaseError(
      `DATABASE_URL must start with postgres:// or postgresql:// (got ${redactUrl(url)})`,
      {
        hint: 'Unset DATABASE_URL to use the embedded database.',
      },
    );
  }
  const [{ default: postgres }, { drizzle }] = await Promise.all([
    import('postgres'),
    import('drizzle-orm/postgres-js'),
  ]);
  const client = postgres(url, {
    max: options.poolSize ?? 4,
    onnotice: () => {},
    connect_timeout: 10,
    // No round trip on connect to learn custom array types: credvault uses none.
    fetch_types: false,
    idle_timeout: 30,
    connection: { application_name: options.applicationName ?? 'credvault' },
  });
  const db = drizzle({ client, schema }) as unknown as Db;
  return {
    db,
    kind: 'postgres',
    description: redactUrl(url),
    async query<T>(text: string, params: unknown[] = []) {
      return (await client.unsafe(text, params as never[])) as unknown as T[];
    },
    async close() {
      await client.end({ timeout: 5 });
    },
  };
}

async function openEmbedded(home: string, lockTimeoutMs: number): Promise<Database> {
  const { acquireDatabaseLock } = await import('./lock.js');
  const dataDir = embeddedDataDir(home);
  const lock = await acquireDatabaseLock(home, lockTimeoutMs, dataDir);
  try {
    const [{ PGlite }, { drizzle }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('drizzle-orm/pglite'),
    ]);
    const client = new PGlite(dataDir);
    await client.waitReady;
    const db = drizzle({ client, schema }) as unknown as Db;
    return {
      db,
      kind: 'pglite',
      description: dataDir,
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
