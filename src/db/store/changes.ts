import { sql } from 'drizzle-orm';
import type { Db } from '../client.js';

/**
 * Tells running daemons that something they may have cached changed. Sent inside the writer's
 * transaction, so PostgreSQL delivers it on commit (and never for a rolled-back change). On the
 * embedded database it goes through the daemon's socket to the daemon's own PGlite, which listens.
 */
export const CHANGES_CHANNEL = 'credvault_changes';

export type ChangeKind = 'grant' | 'connection' | 'client' | 'app';

export async function notifyChange(db: Db, kind: ChangeKind, id: string): Promise<void> {
  await db.execute(sql`select pg_notify(${CHANGES_CHANNEL}, ${`${kind}:${id}`})`);
}

/** notifyChange for several of a kind, in one statement (one notification each). */
export async function notifyChanges(db: Db, kind: ChangeKind, ids: string[]): Promise<void> {
  if (ids.length === 1) return notifyChange(db, kind, ids[0]!);
  if (!ids.length) return;
  await db.execute(
    sql`select pg_notify(${CHANGES_CHANNEL}, ${`${kind}:`} || id) from json_array_elements_text(${JSON.stringify(ids)}::json) as id`,
  );
}
