import { and, asc, desc, eq, gt, gte, lte, type SQL } from 'drizzle-orm';
import type { Db } from '../client.js';
import { auditHead, credentialAccessAudit } from '../schema/index.js';

export type AuditRow = typeof credentialAccessAudit.$inferSelect;
export type NewAuditRow = typeof credentialAccessAudit.$inferInsert;

export const GENESIS_HASH = '0'.repeat(64);

/** Locks the chain head for the rest of the transaction; creates it on first use. */
export async function lockHead(db: Db): Promise<{ lastId: number; lastHash: string; rowCount: number }> {
  const select = () =>
    db
      .select({ lastId: auditHead.lastId, lastHash: auditHead.lastHash, rowCount: auditHead.rowCount })
      .from(auditHead)
      .where(eq(auditHead.id, 1))
      .for('update');
  let [head] = await select();
  if (!head) {
    await db
      .insert(auditHead)
      .values({ id: 1, lastId: 0, lastHash: GENESIS_HASH, rowCount: 0 })
      .onConflictDoNothing();
    [head] = await select();
  }
  return head!;
}

export async function readHead(
  db: Db,
): Promise<{ lastId: number; lastHash: string; rowCount: number } | null> {
  const [head] = await db
    .select({ lastId: auditHead.lastId, lastHash: auditHead.lastHash, rowCount: auditHead.rowCount })
    .from(auditHead)
    .where(eq(auditHead.id, 1));
  return head ?? null;
}

export async function insertRows(
  db: Db,
  rows: NewAuditRow[],
  head: { lastId: number; lastHash: string; rowCount: number },
) {
  await db.insert(credentialAccessAudit).values(rows);
  await db
    .update(auditHead)
    .set({ lastId: head.lastId, lastHash: head.lastHash, rowCount: head.rowCount })
    .where(eq(auditHead.id, 1));
}

export async function pageAfter(db: Db, afterId: number, limit: number, upTo: number): Promise<AuditRow[]> {
  return db
    .select()
    .from(credentialAccessAudit)
    .where(and(gt(credentialAccessAudit.id, afterId), lte(credentialAccessAudit.id, upTo)))
    .orderBy(asc(credentialAccessAudit.id))
    .limit(limit);
}

export interface AuditFilter {
  connectionId?: string;
  actor?: string;
  since?: Date;
  limit: number;
}

export async function listRows(db: Db, filter: AuditFilter): Promise<AuditRow[]> {
  const where: SQL[] = [];
  if (filter.connectionId) where.push(eq(credentialAccessAudit.connectionId, filter.connectionId));
  if (filter.actor) where.push(eq(credentialAccessAudit.actor, filter.actor));
  if (filter.since) where.push(gte(credentialAccessAudit.occurredAt, filter.since));
  return db
    .select()
    .from(credentialAccessAudit)
    .where(where.length ? and(...where) : undefined)
    .orderBy(desc(credentialAccessAudit.id))
    .limit(filter.limit);
}
