import { and, asc, desc, eq, gt, gte, like, lt, lte, type Placeholder, type SQL, sql } from 'drizzle-orm';
import { type Db, executeRows } from '../client.js';
import { auditHead, credentialAccessAudit } from '../schema/index.js';

export type AuditRow = typeof credentialAccessAudit.$inferSelect;

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

/**
 * Rows as JSON arrays, in this order: id, occurred_at, actor, action, target_type, target_id,
 * connection_id, client_address, user_agent, outcome, detail, prev_hash, hash (the array the hash
 * covers, with the hash added: see services/audit.ts).
 *
 * Read as jsonb, parsed once: on `json` each of the thirteen `->>` parses the row's text again, which
 * made a batch of 25 rows cost PostgreSQL twice as long (1.1–1.2 ms against 0.5–0.7 ms, measured
 * from the client), and the daemon's audit batches take turns at the chain's head.
 */
export const insertFromJson = (json: string | Placeholder) => sql`
  insert into credential_access_audit
    (id, occurred_at, actor, action, target_type, target_id, connection_id, client_address, user_agent, outcome, detail, prev_hash, hash)
  select (r->>0)::bigint, (r->>1)::timestamptz, r->>2, r->>3, r->>4, r->>5, (r->>6)::uuid, r->>7, r->>8, r->>9,
    r->10, r->>11, r->>12
  from jsonb_array_elements(${json}::jsonb) as r`;

/**
 * Appends rows (one JSON parameter) and moves the head, in one statement: the head moves only if it is
 * still exactly `expected` (last id and hash), and the rows are inserted only if it moved. With the
 * head locked (recordAudit) it always moves; chained from a head a process believes current (the
 * daemon's batches), another writer in between makes it a no-op (null), and the caller appends again
 * with the head locked.
 */
export async function appendIfHead(
  db: Db,
  rows: string[],
  expected: { lastId: number; lastHash: string },
  next: { lastId: number; lastHash: string },
): Promise<number | null> {
  const [row] = await executeRows<{ inserted: number; row_count: number | null }>(
    db,
    sql`
    with moved as (
      update audit_head set last_id = ${next.lastId}, last_hash = ${next.lastHash}, row_count = row_count + ${rows.length}
      where id = 1 and last_id = ${expected.lastId} and last_hash = ${expected.lastHash}
      returning row_count
    ), inserted as (
      ${insertFromJson(`[${rows.join(',')}]`)} where exists (select 1 from moved)
      returning 1
    )
    select (select count(*) from inserted)::int as inserted, (select row_count from moved)::int as row_count`,
  );
  if (!row || Number(row.inserted) !== rows.length || row.row_count === null) return null;
  return Number(row.row_count);
}

/**
 * Rows no walk of the chain reads or judges, in one statement (one snapshot, the head with them):
 * ids below 1 or past the head (rows credvault did not write: it numbers each record the head's id
 * plus one, in the transaction that moves the head), and times finer than a millisecond (credvault
 * writes milliseconds, and hashes what it wrote: a time moved by less would still match its hash).
 */
export async function rowsOffChain(
  db: Db,
  limit: number,
): Promise<Array<{ id: number; problem: 'outside' | 'time' }>> {
  const rows = await executeRows<{ id: string | number; problem: 'outside' | 'time' }>(
    db,
    sql`with head as (select coalesce((select last_id from audit_head where id = 1), ${Number.MAX_SAFE_INTEGER}) as last_id)
      select id, case when id < 1 or id > head.last_id then 'outside' else 'time' end as problem
      from credential_access_audit, head
      where id < 1 or id > head.last_id or occurred_at <> date_trunc('milliseconds', occurred_at)
      order by id
      limit ${limit}`,
  );
  return rows.map((r) => ({ id: Number(r.id), problem: r.problem }));
}

/** Whether the vault has any data key (init makes one, with the first audit record). */
export async function hasDataKeys(db: Db): Promise<boolean> {
  const [row] = await executeRows<{ any: boolean }>(db, sql`select exists (select 1 from data_keys) as any`);
  return Boolean(row?.any);
}

/** When the vault was last rotated away from the key `keyId` (its successful `key.rotate` record), or null. */
export async function lastRotationFrom(db: Db, keyId: string): Promise<Date | null> {
  const [row] = await db
    .select({ at: credentialAccessAudit.occurredAt })
    .from(credentialAccessAudit)
    .where(
      and(
        eq(credentialAccessAudit.action, 'key.rotate'),
        eq(credentialAccessAudit.outcome, 'success'),
        sql`${credentialAccessAudit.detail}->>'from_key_id' = ${keyId}`,
      ),
    )
    .orderBy(desc(credentialAccessAudit.id))
    .limit(1);
  return row?.at ?? null;
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
  /** One action (`token.serve`), or those under a prefix (`token.`: every `token.…`). */
  action?: string;
  outcome?: string;
  since?: Date;
  /** Before this time (exclusive). */
  until?: Date;
  limit: number;
}

export async function listRows(db: Db, filter: AuditFilter): Promise<AuditRow[]> {
  const where: SQL[] = [];
  if (filter.connectionId) where.push(eq(credentialAccessAudit.connectionId, filter.connectionId));
  if (filter.actor) where.push(eq(credentialAccessAudit.actor, filter.actor));
  if (filter.action) {
    where.push(
      filter.action.endsWith('.')
        ? like(credentialAccessAudit.action, `${filter.action.replaceAll('_', '\\_')}%`)
        : eq(credentialAccessAudit.action, filter.action),
    );
  }
  if (filter.outcome) where.push(eq(credentialAccessAudit.outcome, filter.outcome));
  if (filter.since) where.push(gte(credentialAccessAudit.occurredAt, filter.since));
  if (filter.until) where.push(lt(credentialAccessAudit.occurredAt, filter.until));
  return db
    .select()
    .from(credentialAccessAudit)
    .where(where.length ? and(...where) : undefined)
    .orderBy(desc(credentialAccessAudit.id))
    .limit(filter.limit);
}
