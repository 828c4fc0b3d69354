import { and, asc, desc, eq, gt, isNotNull, isNull, lt, or, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { apiClients } from '../schema/index.js';
import { notifyChange } from './changes.js';

export type ClientRow = typeof apiClients.$inferSelect;
export type NewClientRow = typeof apiClients.$inferInsert;

const t = apiClients;

export async function insert(db: Db, row: NewClientRow): Promise<void> {
  await db.insert(t).values(row);
}

/**
 * The client of that name: the live one (at most one is), else the last one revoked (a name is
 * given again after its client was revoked).
 */
export async function getByName(db: Db, name: string): Promise<ClientRow | null> {
  const [row] = await db
    .select()
    .from(t)
    .where(eq(t.name, name))
    .orderBy(sql`${t.revokedAt} is null desc`, desc(t.createdAt))
    .limit(1);
  return row ?? null;
}

/**
 * Renames the revoked clients of `name` NAME.revoked-<first 8 of the id>, in the transaction of the
 * live client about to take the name (migration 0012 says why: builds from before 0005 find a client
 * by name alone).
 */
export async function renameRevoked(db: Db, name: string): Promise<void> {
  await db
    .update(t)
    .set({ name: sql`${t.name} || '.revoked-' || left(${t.id}::text, 8)` })
    .where(and(eq(t.name, name), isNotNull(t.revokedAt)));
}

/** The client of that name that is not revoked (expired or not). */
export async function getUnrevokedByName(db: Db, name: string): Promise<ClientRow | null> {
  const [row] = await db
    .select()
    .from(t)
    .where(and(eq(t.name, name), isNull(t.revokedAt)));
  return row ?? null;
}

export async function getByTokenHash(db: Db, tokenHash: string): Promise<ClientRow | null> {
  const [row] = await db.select().from(t).where(eq(t.tokenHash, tokenHash));
  return row ?? null;
}

export async function getById(db: Db, id: string): Promise<ClientRow | null> {
  const [row] = await db.select().from(t).where(eq(t.id, id));
  return row ?? null;
}

export async function list(db: Db): Promise<ClientRow[]> {
  return db.select().from(t).orderBy(asc(t.name), asc(t.createdAt));
}

export async function revoke(db: Db, id: string): Promise<void> {
  await db.update(t).set({ revokedAt: sql`now()` }).where(eq(t.id, id));
  await notifyChange(db, 'client', id);
}

/**
 * Sets when clients were last used, to the time of each one's use: never back in time (a later use
 * written first stays), and never past a client's revocation (a use written after the client was
 * revoked, by a daemon that wrote its uses late, counts only if it came before). One statement a client:
 * a daemon writes what it saw every 30 s.
 */
export async function touch(db: Db, uses: Array<{ id: string; at: Date }>): Promise<void> {
  for (const { id, at } of uses) {
    await db
      .update(t)
      .set({ lastUsedAt: at })
      .where(
        and(
          eq(t.id, id),
          or(isNull(t.revokedAt), gt(t.revokedAt, at)),
          or(isNull(t.lastUsedAt), lt(t.lastUsedAt, at)),
        ),
      );
  }
}
