import { asc, eq, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { platforms } from '../schema/index.js';

export type PlatformRow = typeof platforms.$inferSelect;

const columns = {
  id: platforms.id,
  displayName: platforms.displayName,
  capabilities: platforms.capabilities,
  createdAt: platforms.createdAt,
  updatedAt: platforms.updatedAt,
};

/** Inserts or refreshes a platform row; returns whether anything changed. */
export async function upsert(
  db: Db,
  row: { id: string; displayName: string; capabilities: Record<string, unknown> },
) {
  const result = await db
    .insert(platforms)
    .values(row)
    .onConflictDoUpdate({
      target: platforms.id,
      set: { displayName: row.displayName, capabilities: row.capabilities, updatedAt: sql`now()` },
      setWhere: sql`${platforms.displayName} is distinct from excluded.display_name or ${platforms.capabilities} is distinct from excluded.capabilities`,
    })
    .returning({ id: platforms.id });
  return result.length > 0;
}

export async function list(db: Db): Promise<PlatformRow[]> {
  return db.select(columns).from(platforms).orderBy(asc(platforms.id));
}

export async function get(db: Db, id: string): Promise<PlatformRow | null> {
  const [row] = await db.select(columns).from(platforms).where(eq(platforms.id, id));
  return row ?? null;
}
