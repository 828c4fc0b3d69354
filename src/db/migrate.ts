import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseError } from '../errors.js';
import { type Database, postgresConnection, postgresOptions } from './client.js';
import { isUndefinedTable } from './errors.js';

interface JournalEntry {
  idx: number;
  tag: string;
  when: number;
}

export interface MigrationState {
  tag: string;
  createdAt: Date;
  applied: boolean;
}

/** The committed migrations ship in `drizzle/` at the package root, found from this module upward. */
export function migrationsFolder(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'drizzle');
    if (existsSync(join(candidate, 'meta', '_journal.json'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir)
      throw new DatabaseError('the migrations folder (drizzle/) is missing from this installation');
    dir = parent;
  }
}

function readJournal(): JournalEntry[] {
  const journal = JSON.parse(readFileSync(join(migrationsFolder(), 'meta', '_journal.json'), 'utf8')) as {
    entries: JournalEntry[];
  };
  return journal.entries;
}

async function appliedMigrations(database: Database): Promise<Array<{ created_at: string | number }>> {
  try {
    return await database.query<{ created_at: string | number }>(
      'select created_at from drizzle.__drizzle_migrations order by created_at',
    );
  } catch (error) {
    if (isUndefinedTable(error)) return [];
    throw error;
  }
}

/** When the newest migration applied to the database was made (its journal date), or null. */
export async function lastAppliedMigration(database: Database): Promise<number | null> {
  const applied = await appliedMigrations(database);
  return applied.length ? Number(applied[applied.length - 1]!.created_at) : null;
}

/**
 * How many migrations applied to the database this credvault does not know: a newer version migrated
 * it (a fleet being upgraded). Such a schema only adds to what this one reads (README: rolling
 * upgrades), but this copy is behind the rest of the fleet and should be upgraded.
 */
export async function newerMigrations(database: Database): Promise<number> {
  const newest = readJournal().at(-1)?.when ?? 0;
  return (await appliedMigrations(database)).filter((m) => Number(m.created_at) > newest).length;
}

/** What to tell the operator of a copy whose database a newer credvault migrated. */
export function newerWarning(newer: number): string {
  return `the database also has ${newer} migration${newer === 1 ? '' : 's'} this credvault does not know: a newer version migrated it. Upgrade credvault here to the version the rest of the fleet runs`;
}

export async function migrationStatus(database: Database): Promise<MigrationState[]> {
  const last = (await lastAppliedMigration(database)) ?? -1;
  return readJournal().map((entry) => ({
    tag: entry.tag,
    createdAt: new Date(entry.when),
    applied: entry.when <= last,
  }));
}

/** Applies pending migrations in one transaction. On PostgreSQL, an advisory lock keeps two migrators apart. */
export async function migrate(database: Database): Promise<string[]> {
  const before = await migrationStatus(database);
  const pending = before.filter((m) => !m.applied).map((m) => m.tag);
  if (pending.length === 0) return [];
  const config = { migrationsFolder: migrationsFolder() };
  if (database.kind === 'pglite') {
    const { migrate: run } = await import('drizzle-orm/pglite/migrator');
    await run(database.db as never, config);
  } else {
    const target = database.target;
    if (!target) throw new DatabaseError('no PostgreSQL connection to migrate');
    // drizzle's advice for postgres.js: migrate on a separate client with max: 1.
    const [{ default: postgres }, { drizzle }, { migrate: run }] = await Promise.all([
      import('postgres'),
      import('drizzle-orm/postgres-js'),
      import('drizzle-orm/postgres-js/migrator'),
    ]);
    const options = { ...postgresOptions(target), max: 1, onnotice: () => {}, fetch_types: false };
    const client =
      'url' in target ? postgres(postgresConnection(target.url).url, options) : postgres(options);
    try {
      await client`select pg_advisory_lock(hashtext('credvault:migrate'))`;
      await run(drizzle({ client }), config);
      await client`select pg_advisory_unlock(hashtext('credvault:migrate'))`;
    } finally {
      await client.end({ timeout: 5 });
    }
  }
  const after = await migrationStatus(database);
  return after.filter((m) => m.applied && pending.includes(m.tag)).map((m) => m.tag);
}

/**
 * Before a command uses the database: exit 8 when it is migrated only part of the way (this
 * credvault is newer than the schema), rather than run on tables it does not expect. A database
 * with no migration at all is left to the command, which says there is no vault.
 */
export async function assertNotBehind(database: Database): Promise<void> {
  const last = await lastAppliedMigration(database);
  if (last === null) return;
  const newest = readJournal().at(-1)?.when ?? 0;
  if (last < newest) await assertMigrated(database);
}

/** Throws the contract's database error (exit 8) when migrations are pending. */
export async function assertMigrated(database: Database): Promise<void> {
  const pending = (await migrationStatus(database)).filter((m) => !m.applied);
  if (pending.length > 0) {
    throw new DatabaseError(
      `the database at ${database.description} is not migrated (${pending.length} migration${pending.length === 1 ? '' : 's'} pending)`,
      { hint: 'Run `credvault db migrate` (or `credvault init`).' },
    );
  }
}
