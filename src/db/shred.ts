import type { Database } from './client.js';
import { errorMessage } from './errors.js';

/** The tables whose rows hold secrets (ciphertexts, wrapped data keys). */
export type SecretTable = 'oauth_tokens_vault' | 'data_keys' | 'oauth_app_credentials' | 'oauth_states';

/**
 * Removes what destroyed secrets leave behind in the database's files, once the action that
 * destroyed them has committed. A DELETE (or the UPDATE that re-wraps a data key) leaves the old row
 * in its page, and in the write-ahead log until its segment is removed: on the embedded database,
 * whose master.key is in the same folder by default, a revoked refresh token, or a data key wrapped
 * under a key rotated away, could still be read out of a copy of the data folder. There each table
 * is rewritten (VACUUM FULL: plain VACUUM frees the row's space but leaves its bytes in the page
 * until they are written over), the log moves to a new segment, and a checkpoint removes the old
 * ones (PGlite runs with wal_recycle=off, so a segment is deleted rather than renamed for reuse with
 * its old contents). On a PostgreSQL server, where a rewrite would lock out every other process for
 * its duration, the tables are vacuumed; its log, archive, replicas and backups keep what they keep,
 * and are the operator's to protect (README). (ANALYZE keeps no sample of these columns: see
 * migration 0006.)
 *
 * Resolves what could not be done, for a warning (the action itself is done by then), or null.
 */
export async function shred(database: Database, tables: readonly SecretTable[]): Promise<string | null> {
  try {
    const embedded = database.kind === 'pglite' || database.shared;
    for (const table of tables) await database.query(`vacuum ${embedded ? 'full ' : ''}${table}`);
    if (embedded) {
      // ANALYZE's samples of these columns from before migration 0006 stay in pg_statistic's pages as
      // dead rows (the embedded database has no autovacuum): its superuser rewrites the catalog too.
      await database.query('vacuum full pg_statistic');
      await database.query('select pg_switch_wal()');
      await database.query('checkpoint');
    }
    return null;
  } catch (error) {
    return `the ${tables.join(' and ')} table${tables.length > 1 ? 's' : ''} could not be vacuumed (${errorMessage(error)}): copies of what was destroyed stay in the database's files until VACUUM runs`;
  }
}
