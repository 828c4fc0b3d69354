import { getTableName, is } from 'drizzle-orm';
import { PgTable } from 'drizzle-orm/pg-core';
import type { Database } from './client.js';
import * as schema from './schema/index.js';

/**
 * What autovacuum would do, for a database that has none or has not got round to it yet.
 *
 * The embedded database (PGlite) runs PostgreSQL as a single session: no autovacuum, so its tables
 * are never analysed and their dead rows never vacuumed. Without statistics the planner assumes that
 * a status filter keeps a handful of rows, and the sweep's claim (the due grants in expiry order,
 * through their connections) reads and sorts every grant instead of walking the expiry index: 110 ms
 * instead of 5 ms per claim at 10,000 connections. A PostgreSQL server analyses a table within a
 * minute of a bulk load; a daemon started inside that minute (after an import, say) would claim
 * with the same plan until then.
 *
 * The thresholds are autovacuum's defaults: analyse past 50 + 10% of the table's rows changed,
 * vacuum past 50 + 20% dead rows or 1,000 + 20% rows inserted since the last vacuum. The embedded
 * database forgets those counters when it is closed, so a table is also analysed when it has never
 * been, or when it has grown by a fifth since its statistics were taken.
 */

export interface MaintenanceStep {
  table: string;
  /** `skipped`: due, but this role does not own the table (PostgreSQL would only warn). */
  action: 'analyze' | 'vacuum' | 'skipped';
}

/** credvault's own tables: a schema shared with other applications keeps its tables to itself. */
const TABLES = Object.values(schema)
  .filter((value) => is(value, PgTable))
  .map((table) => getTableName(table as PgTable));

interface TableStats {
  schema: string;
  table: string;
  owned: boolean;
  /** As of the last ANALYZE or VACUUM; -1 when there has been none. */
  rows: number;
  /** Pages then, and now. */
  pagesThen: number;
  pages: number;
  changed: number;
  dead: number;
  inserted: number;
}

/** credvault's tables (in the current schema) that are past autovacuum's thresholds, and what each needs. */
async function maintenanceDue(
  database: Database,
  vacuum: boolean,
): Promise<Array<MaintenanceStep & { schema: string }>> {
  const stats = await database.query<TableStats>(
    `select s.schemaname as "schema", s.relname as "table", pg_has_role(c.relowner, 'MEMBER') as "owned",
            c.reltuples::float8 as "rows", c.relpages::float8 as "pagesThen",
            (pg_relation_size(c.oid) / current_setting('block_size')::int)::float8 as "pages",
            s.n_mod_since_analyze::float8 as "changed", s.n_dead_tup::float8 as "dead",
            s.n_ins_since_vacuum::float8 as "inserted"
       from pg_stat_user_tables s join pg_class c on c.oid = s.relid
      where s.schemaname = current_schema() and s.relname = any(string_to_array($1, ','))
      order by s.relname`,
    [TABLES.join(',')],
  );
  const steps: Array<MaintenanceStep & { schema: string }> = [];
  for (const row of stats) {
    const rows = Math.max(0, Number(row.rows));
    const pages = Number(row.pages);
    const needsVacuum =
      vacuum && (Number(row.dead) > 50 + 0.2 * rows || Number(row.inserted) > 1000 + 0.2 * rows);
    const needsAnalyze =
      Number(row.changed) > 50 + 0.1 * rows ||
      (Number(row.rows) < 0 && pages > 0) ||
      pages > 8 + 1.2 * Number(row.pagesThen);
    // On the embedded database a table without statistics is vacuumed too: its dead-row counter
    // started again when the database was opened, and ANALYZE would only find the dead rows.
    if (!(needsVacuum || needsAnalyze)) continue;
    const action = !row.owned ? 'skipped' : vacuum ? 'vacuum' : 'analyze';
    steps.push({ schema: row.schema, table: row.table, action });
  }
  return steps;
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * Runs the steps that are due (a vacuum analyses too) and returns them. `vacuum` is for the embedded
 * database only: a PostgreSQL server's autovacuum owns vacuuming, and an ANALYZE there is only a
 * head start on it. A table someone else has locked (a vacuum, an index being built) is skipped, not
 * waited for: the daemon does this before its first sweep. Tables this role does not own are
 * reported as skipped (their owner, or autovacuum, looks after them). `only` limits it to some tables.
 * The steps run at once, each on a connection of its own where the pool has one (the embedded
 * database, a single session, runs them in turn).
 */
export async function maintainTables(
  database: Database,
  vacuum: boolean,
  only?: readonly string[],
): Promise<MaintenanceStep[]> {
  const due = (await maintenanceDue(database, vacuum)).filter((step) => !only || only.includes(step.table));
  const outcomes = await Promise.allSettled(
    due
      .filter(({ action }) => action !== 'skipped')
      .map(({ schema: namespace, table, action }) => {
        const name = `${quote(namespace)}.${quote(table)}`;
        return database.query(
          action === 'vacuum' ? `vacuum (analyze, skip_locked) ${name}` : `analyze (skip_locked) ${name}`,
        );
      }),
  );
  // Every step has ended (none is left running behind a failure); the first failure is reported.
  const failed = outcomes.find((outcome) => outcome.status === 'rejected');
  if (failed) throw failed.reason;
  return due.map(({ table, action }) => ({ table, action }));
}
