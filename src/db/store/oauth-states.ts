import { eq, lt, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { oauthStates } from '../schema/index.js';

export type StateRow = typeof oauthStates.$inferSelect;
export type NewStateRow = typeof oauthStates.$inferInsert;

const s = oauthStates;

export async function insert(db: Db, row: NewStateRow): Promise<void> {
  await db.insert(s).values(row);
}

/** The state with this hash, locked for the rest of the transaction (single use across processes). */
export async function lockByHash(db: Db, stateHash: string): Promise<StateRow | null> {
  const [row] = await db.select().from(s).where(eq(s.stateHash, stateHash)).for('update');
  return row ?? null;
}

export async function markUsed(db: Db, id: string): Promise<void> {
  await db.update(s).set({ usedAt: sql`now()`, codeVerifierEnc: null }).where(eq(s.id, id));
}

/** Drops states that expired more than a day ago (their hashes are of no use to anyone). */
export async function purgeExpired(db: Db): Promise<void> {
  await db.delete(s).where(lt(s.expiresAt, sql`now() - interval '1 day'`));
}
