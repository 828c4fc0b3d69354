import { and, eq, gt, lt, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { adoptionLeases } from '../schema/index.js';
import { tokenLockKey as key, leaseEnd } from './tokens.js';

const t = adoptionLeases;

/**
 * Takes the lease on adopting the refresh token of this SHA-256 for the app, if nobody holds a live
 * one (a lapsed lease, whose holder died or overran it, is dropped first). The database's clock
 * decides, as for a grant's refresh lease. True when taken.
 */
export async function tryTake(
  db: Db,
  appId: string,
  sha256: string,
  owner: string,
  leaseMs: number,
): Promise<boolean> {
  await db.delete(t).where(lt(t.expiresAt, sql`now()`));
  const taken = await db
    .insert(t)
    .values({
      lockKey: key(appId, sha256),
      owner,
      expiresAt: leaseEnd(leaseMs),
    })
    .onConflictDoNothing({ target: t.lockKey })
    .returning({ owner: t.owner });
  return taken.length > 0;
}

/** Gives the lease back, if it is still this owner's (a lapsed one may have been taken over). */
export async function release(db: Db, appId: string, sha256: string, owner: string): Promise<void> {
  await db.delete(t).where(and(eq(t.lockKey, key(appId, sha256)), eq(t.owner, owner)));
}

/**
 * Lengthens the lease to `leaseMs` from now, if it is still this owner's and has not lapsed (a lapsed
 * one may be taken over at any moment, or have been and given back). True when it was.
 */
export async function renew(
  db: Db,
  appId: string,
  sha256: string,
  owner: string,
  leaseMs: number,
): Promise<boolean> {
  const renewed = await db
    .update(t)
    .set({ expiresAt: leaseEnd(leaseMs) })
    .where(and(eq(t.lockKey, key(appId, sha256)), eq(t.owner, owner), gt(t.expiresAt, sql`now()`)))
    .returning({ owner: t.owner });
  return renewed.length > 0;
}
