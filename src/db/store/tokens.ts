import { and, eq, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import { type Db, executeRows } from '../client.js';
import { oauthTokensVault } from '../schema/index.js';
import { notifyChange } from './changes.js';

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
): Promise<GrantRow | null> {
  const [row] = await db
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
    .returning();
  // No notification: a daemon holding the previous access token may keep serving it while it is
  // valid (it was not revoked), and reads the new one when it needs a fresher one.
  return row ?? null;
}

/** Records a failed refresh: the error, the cool-down, and the lease released. The tokens stay. */
export async function recordFailure(
  db: Db,
  id: string,
  owner: string,
  version: number,
  failure: { code: string; message: string; cooldownUntil: Date | null; clearInFlight: boolean },
): Promise<boolean> {
  const updated = await db
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
    // Like a success, a failure is recorded only over the version it was about: a late failure must
    // not mark a grant that another process has refreshed meanwhile.
    .where(and(eq(t.id, id), eq(t.version, version), or(eq(t.leaseOwner, owner), isNull(t.leaseOwner))))
    .returning({ id: t.id });
  if (updated.length) await notifyChange(db, 'grant', id);
  return updated.length > 0;
}

/** Destroys a grant's secrets: the row goes, and the caller destroys its data key. */
export async function remove(db: Db, id: string): Promise<void> {
  await db.delete(t).where(eq(t.id, id));
  await notifyChange(db, 'grant', id);
}

/**
 * Claims grants that are due for a refresh, for the daemon's sweep: access token expiring within the
 * window, or unused for long enough that the platform could drop the refresh token. Rows another
 * daemon is claiming right now are skipped (SKIP LOCKED), and the lease set here keeps them ours
 * while we refresh; a daemon that dies leaves leases that simply lapse.
 */
export async function claimDue(
  db: Db,
  owner: string,
  leaseMs: number,
  windowMs: number,
  keepAliveDays: Record<string, number>,
  limit: number,
): Promise<GrantRow[]> {
  const keepAlive = Object.entries(keepAliveDays);
  const idleCase = keepAlive.length
    ? sql`case ${t.platform} ${sql.join(
        keepAlive.map(([platform, days]) => sql`when ${platform} then ${`${days} days`}::interval`),
        sql` `,
      )} end`
    : sql`null::interval`;
  const claimed = await executeRows<{ id: string; in_flight: string | Date | null }>(
    db,
    sql`
    with due as (
      select ${t.id} as id, ${t.refreshInFlightSince} as in_flight from ${t}
      where (${t.leaseExpiresAt} is null or ${t.leaseExpiresAt} < now())
        and (${t.cooldownUntil} is null or ${t.cooldownUntil} < now())
        and ${t.refreshTokenEnc} is not null
        and exists (
          select 1 from ad_account_connections c
          where c.token_id = ${t.id} and c.status in ('active', 'error')
        )
        and (
          ${t.accessTokenExpiresAt} < now() + ${`${windowMs} milliseconds`}::interval
          or ${t.lastRefreshedAt} < now() - ${idleCase}
        )
        -- A platform whose tokens live shorter than the window would otherwise be refreshed in a loop.
        and (${t.lastRefreshedAt} is null or ${t.lastRefreshedAt} < now() - interval '1 minute')
      order by ${t.accessTokenExpiresAt} asc nulls last
      limit ${limit}
      for update skip locked
    )
    update ${t} set lease_owner = ${owner}, lease_expires_at = now() + ${`${leaseMs} milliseconds`}::interval,
      -- The refresh leaves right after the claim: it is in flight from here on.
      refresh_in_flight_since = coalesce(${t.refreshInFlightSince}, now())
    from due where ${t.id} = due.id
    returning ${t.id} as id, due.in_flight as in_flight`,
  );
  if (!claimed.length) return [];
  const before = new Map(claimed.map((r) => [r.id, r.in_flight ? new Date(r.in_flight) : null]));
  const full = await db
    .select()
    .from(t)
    .where(inArray(t.id, [...before.keys()]));
  // As it was before the claim: an earlier refresh's unknown outcome, or none.
  return full.map((row) => ({ ...row, refreshInFlightSince: before.get(row.id) ?? null }));
}

/** When the next grant becomes due (its expiry minus the window), for the sweep's sleep. */
export async function nextExpiry(db: Db): Promise<Date | null> {
  const [row] = await db
    .select({ at: sql<Date | string | null>`min(${t.accessTokenExpiresAt})` })
    .from(t)
    .where(sql`${t.refreshTokenEnc} is not null and exists (
      select 1 from ad_account_connections c where c.token_id = ${t.id} and c.status in ('active', 'error'))`);
  const at = row?.at;
  return at ? new Date(at) : null;
}
