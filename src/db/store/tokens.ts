import { and, eq, isNull, lt, or, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { oauthTokensVault } from '../schema/index.js';

export type GrantRow = typeof oauthTokensVault.$inferSelect;
export type NewGrantRow = typeof oauthTokensVault.$inferInsert;

const t = oauthTokensVault;

export async function get(db: Db, id: string): Promise<GrantRow | null> {
  const [row] = await db.select().from(t).where(eq(t.id, id));
  return row ?? null;
}

export async function insert(db: Db, row: NewGrantRow): Promise<void> {
  await db.insert(t).values(row);
}

/**
 * Takes the refresh lease if nobody holds a live one. The database's clock decides, so hosts with
 * skewed clocks agree. Returns the row as it is now, or null when someone else holds the lease.
 */
export async function tryLease(db: Db, id: string, owner: string, leaseMs: number): Promise<GrantRow | null> {
  const [row] = await db
    .update(t)
    .set({ leaseOwner: owner, leaseExpiresAt: sql`now() + ${`${leaseMs} milliseconds`}::interval` })
    .where(and(eq(t.id, id), or(isNull(t.leaseExpiresAt), lt(t.leaseExpiresAt, sql`now()`))))
    .returning();
  return row ?? null;
}

/** Notes that a refresh request is about to leave, so a lost answer is visible afterwards. */
export async function markInFlight(db: Db, id: string, owner: string): Promise<void> {
  await db
    .update(t)
    // The earliest request whose answer is unknown is the one that matters.
    .set({ refreshInFlightSince: sql`coalesce(${t.refreshInFlightSince}, now())` })
    .where(and(eq(t.id, id), eq(t.leaseOwner, owner)));
}

export async function releaseLease(db: Db, id: string, owner: string): Promise<void> {
  await db
    .update(t)
    .set({ leaseOwner: null, leaseExpiresAt: null })
    .where(and(eq(t.id, id), eq(t.leaseOwner, owner)));
}

/**
 * Writes refreshed tokens if the version read is still current and the lease is still ours (or
 * lapsed unclaimed): a writer whose lease was taken over cannot overwrite a newer token.
 */
export async function writeRefreshed(
  db: Db,
  id: string,
  owner: string,
  version: number,
  changes: Partial<NewGrantRow>,
): Promise<boolean> {
  const updated = await db
    .update(t)
    .set({
      ...changes,
      version: sql`${t.version} + 1`,
      leaseOwner: null,
      leaseExpiresAt: null,
      refreshInFlightSince: null,
      cooldownUntil: null,
      lastErrorCode: null,
      lastErrorMessage: null,
      lastErrorAt: null,
      updatedAt: sql`now()`,
    })
    .where(and(eq(t.id, id), eq(t.version, version), or(eq(t.leaseOwner, owner), isNull(t.leaseOwner))))
    .returning({ version: t.version });
  return updated.length > 0;
}

/** Records a failed refresh: the error, the cool-down, and the lease released. The tokens stay. */
export async function recordFailure(
  db: Db,
  id: string,
  owner: string,
  failure: { code: string; message: string; cooldownUntil: Date | null; clearInFlight: boolean },
): Promise<void> {
  await db
    .update(t)
    .set({
      lastErrorCode: failure.code,
      lastErrorMessage: failure.message,
      lastErrorAt: sql`now()`,
      cooldownUntil: failure.cooldownUntil,
      leaseOwner: null,
      leaseExpiresAt: null,
      // Cleared only when no request with an unknown outcome is left (a timeout's may have rotated).
      ...(failure.clearInFlight ? { refreshInFlightSince: null } : {}),
      updatedAt: sql`now()`,
    })
    .where(and(eq(t.id, id), or(eq(t.leaseOwner, owner), isNull(t.leaseOwner))));
}

/** Destroys a grant's secrets: the row goes, and the caller destroys its data key. */
export async function remove(db: Db, id: string): Promise<void> {
  await db.delete(t).where(eq(t.id, id));
}
