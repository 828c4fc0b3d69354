import { and, asc, eq, getTableColumns, isNotNull, isNull, lt, or, type Placeholder, sql } from 'drizzle-orm';
import type { WrappedDataKey } from '../../crypto/envelope.js';
import type { Db } from '../client.js';
import { dataKeys, oauthAppCredentials, oauthTokensVault } from '../schema/index.js';
import { insertFromJson } from './audit.js';
import { notifyChange, notifyChanges } from './changes.js';
import { prepared } from './prepared.js';

export type GrantRow = typeof oauthTokensVault.$inferSelect;
export type NewGrantRow = typeof oauthTokensVault.$inferInsert;

const t = oauthTokensVault;

export async function get(db: Db, id: string): Promise<GrantRow | null> {
  const [row] = await db.select().from(t).where(eq(t.id, id));
  return row ?? null;
}

/**
 * The grant with the database's clock at the moment it was read (`dbNow`): leases and cool-downs are
 * written by the database's clock, and are judged by it too, so a host whose clock is off neither
 * waits for a lapsed lease nor calls a platform that is cooling down.
 */
export async function getWithClock(db: Db, id: string): Promise<(GrantRow & { dbNow: Date }) | null> {
  const [row] = await db
    .select({ ...getTableColumns(t), dbNow: sql`now()`.mapWith(t.updatedAt) })
    .from(t)
    .where(eq(t.id, id));
  return row ?? null;
}

/**
 * The grants of an app that hold a refresh token stored with this SHA-256 (an import's, matched by its
 * own column too: grants imported before refresh_token_sha256 have only that), oldest first.
 */
export async function listByTokenSha256(db: Db, appId: string, sha256: string): Promise<GrantRow[]> {
  return db
    .select()
    .from(t)
    .where(
      and(
        eq(t.appId, appId),
        isNotNull(t.refreshTokenEnc),
        or(eq(t.refreshTokenSha256, sha256), eq(t.importedTokenSha256, sha256)),
      ),
    )
    .orderBy(asc(t.createdAt), asc(t.id));
}

/** The grant, locked until the caller's transaction ends (a revocation waits for it). */
export async function lock(db: Db, id: string): Promise<GrantRow | null> {
  const [row] = await db.select().from(t).where(eq(t.id, id)).for('update');
  return row ?? null;
}

/**
 * Until the caller's transaction ends, it alone stores or joins a grant of this app holding the
 * refresh token of this SHA-256: a transaction-scoped advisory lock keyed on both (no row to lock
 * exists before the first grant holding it is stored). Two processes given the same token at once
 * take turns, and the second, looking again under it, finds the first one's grant.
 */
export async function lockTokenSha256(db: Db, appId: string, sha256: string): Promise<void> {
  await db.execute(sql`select pg_advisory_xact_lock(${tokenLockKey(appId, sha256)})`);
}

/** The 64-bit key of the app and a refresh token's SHA-256: this lock's, and an adoption lease's. */
export function tokenLockKey(appId: string, sha256: string) {
  return sql`hashtextextended(${appId}::text || ':' || ${sha256}::text, 0)`;
}

/** A lease's end, `ms` from now by the database's clock (every lease is judged by it). */
export function leaseEnd(ms: number) {
  return sql`now() + ${`${ms} milliseconds`}::interval`;
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
    .set({ leaseOwner: owner, leaseExpiresAt: leaseEnd(leaseMs) })
    .where(and(eq(t.id, id), or(isNull(t.leaseExpiresAt), lt(t.leaseExpiresAt, sql`now()`))))
    .returning();
  return row ?? null;
}

/**
 * Notes that a refresh request is about to leave, so a lost answer is visible afterwards; only while
 * the lease is still the owner's and has not lapsed (by the database's clock). False when it is not:
 * the request must not leave (another refresher may have used the refresh token since).
 */
export async function markInFlight(db: Db, id: string, owner: string): Promise<boolean> {
  const rows = await db
    .update(t)
    // The earliest request whose answer is unknown is the one that matters.
    .set({ refreshInFlightSince: sql`coalesce(${t.refreshInFlightSince}, now())` })
    .where(and(eq(t.id, id), eq(t.leaseOwner, owner), sql`${t.leaseExpiresAt} > now()`))
    .returning({ id: t.id });
  return rows.length > 0;
}

/**
 * A claimed refresh that failed for credvault's own reason (its answer could not be written, a data
 * key that does not open): the lease goes, and the grant waits `forMs` (by the database's clock)
 * before a sweep claims it again, with the reason recorded for the reads meanwhile (as a platform
 * failure's is); `inFlightSince`, when given, is what the claim's in-flight mark goes back to (no
 * request left). Only over the version claimed, whether the lease is still ours or was already let
 * go. No audit row: writing one may be what failed. True when the grant was marked.
 */
export async function backOff(
  db: Db,
  claimed: { id: string; version: number },
  owner: string,
  failure: { forMs: number; message: string; inFlightSince?: Date | null | undefined },
): Promise<boolean> {
  const updated = await db
    .update(t)
    .set({
      leaseOwner: null,
      leaseExpiresAt: null,
      ...(failure.inFlightSince !== undefined ? { refreshInFlightSince: failure.inFlightSince } : {}),
      cooldownUntil: sql`now() + ${failure.forMs} * interval '1 millisecond'`,
      lastErrorCode: 'transient',
      lastErrorMessage: failure.message.slice(0, 1000),
      lastErrorAt: sql`now()`,
      updatedAt: sql`now()`,
    })
    .where(
      and(
        eq(t.id, claimed.id),
        eq(t.version, claimed.version),
        or(eq(t.leaseOwner, owner), isNull(t.leaseOwner)),
      ),
    )
    .returning({ id: t.id });
  return updated.length > 0;
}

export async function releaseLease(db: Db, id: string, owner: string): Promise<void> {
  await db
    .update(t)
    .set({ leaseOwner: null, leaseExpiresAt: null })
    .where(and(eq(t.id, id), eq(t.leaseOwner, owner)));
}

/** What a successful refresh writes; a refresh token or scope left out keeps the stored one. */
export interface RefreshedTokens {
  accessTokenEnc: string;
  refreshTokenEnc?: string;
  tokenType: string;
  scope?: string;
  accessTokenExpiresAt: Date | null;
  refreshTokenExpiresAt: Date | null;
  refreshTokenExpiryFixed: boolean;
  lastRefreshedAt: Date;
  /**
   * For a grant with no refresh_token_sha256 (stored before migration 0008): the SHA-256 of the
   * refresh token this refresh presented, recorded with its answer. A grant that has one keeps it.
   */
  presentedTokenSha256?: string;
}

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

/**
 * Gives back a claim that was never sent (the daemon stopped, or the connection went away meanwhile):
 * the lease goes and the in-flight mark is what it was before the claim.
 */
export async function unclaim(db: Db, claimed: GrantRow, owner: string): Promise<void> {
  await db
    .update(t)
    .set({ leaseOwner: null, leaseExpiresAt: null, refreshInFlightSince: claimed.refreshInFlightSince })
    .where(and(eq(t.id, claimed.id), eq(t.leaseOwner, owner)));
}

/**
 * Writes refreshed tokens, in one statement for several grants. Each row is written only if the
 * version read is still current and the lease is still ours (or lapsed unclaimed): a writer whose
 * lease was taken over cannot overwrite a newer token. Answers the rows written, by grant id.
 */
export async function writeRefreshed(
  db: Db,
  results: Refreshed[],
  { notify }: { notify: boolean },
): Promise<Map<string, GrantRow>> {
  const rows = await db
    .update(t)
    .set(REFRESHED_SET)
    .from(refreshedValues(refreshedJson(results)))
    .where(REFRESHED_MATCH)
    .returning(getTableColumns(t));
  // With `notify`, daemons drop the token they hold for these grants and read the new one: after
  // `connections refresh --force` (an operator replacing a token the platform stopped taking, say) a
  // daemon must not go on serving the old one. The sweep's own writes (chained or locked) do not
  // notify: the token a daemon holds is still valid then, it reads the new one when it needs a
  // fresher one, and thousands of notifications would each cost every daemon a cache walk.
  if (notify)
    await notifyChanges(
      db,
      'grant',
      rows.map((row) => row.id),
    );
  return new Map(rows.map((row) => [row.id, row]));
}

/**
 * writeRefreshed and the audit rows that record it, in one statement and so all or nothing, without a
 * transaction's round trips: the rows are appended only if the audit chain's head is still `expected`
 * (the head this process wrote last; see services/audit.ts chainAfter), and the tokens are written
 * only if every one of them still matches (version and lease: they are locked first, so none can
 * change before the update). Otherwise nothing is written and this answers null; the caller writes
 * them the long way (a transaction with the head locked), which also sorts out the ones that lost
 * their lease.
 */
export async function writeRefreshedChained(
  db: Db,
  results: Refreshed[],
  auditRows: string[],
  expected: { lastId: number; lastHash: string },
  next: { lastId: number; lastHash: string },
): Promise<{ rows: Map<string, GrantRow>; rowCount: number } | null> {
  const rows = await writeChained(db, {
    values: refreshedJson(results),
    grants: results.length,
    audit: `[${auditRows.join(',')}]`,
    auditCount: auditRows.length,
    expectedId: expected.lastId,
    expectedHash: expected.lastHash,
    nextId: next.lastId,
    nextHash: next.lastHash,
  });
  if (rows.length === 0) return null;
  if (rows.length !== results.length) {
    // The locks make this impossible; were it to happen, the audit rows say more than was written.
    throw new Error(`wrote ${rows.length} of ${results.length} refreshed grants with their audit rows`);
  }
  return {
    rows: new Map(rows.map(({ headRowCount: _, ...row }) => [row.id, row])),
    rowCount: Number(rows[0]!.headRowCount),
  };
}

const writeChained = prepared('credvault_write_refreshed_chained', (db, name) => {
  const p = (key: string) => sql.placeholder(key);
  const locked = db.$with('locked', { n: sql<number>`n` }).as(
    sql`select count(*)::int as n from (select 1 from ${t}, ${refreshedValues(p('values'))}
        where ${REFRESHED_MATCH} for update of ${t}) as matching`,
  );
  const moved = db.$with('moved', { rowCount: sql<number>`row_count` }).as(
    sql`update audit_head set last_id = ${p('nextId')}, last_hash = ${p('nextHash')},
          row_count = row_count + ${p('auditCount')}::int
        where id = 1 and last_id = ${p('expectedId')} and last_hash = ${p('expectedHash')}
          and (select n from locked) = ${p('grants')}::int
        returning row_count`,
  );
  const appended = db
    .$with('appended', { one: sql<number>`one` })
    .as(sql`${insertFromJson(p('audit'))} where exists (select 1 from moved) returning 1 as one`);
  return db
    .with(locked, moved, appended)
    .update(t)
    .set(REFRESHED_SET)
    .from(refreshedValues(p('values')))
    .where(sql`${REFRESHED_MATCH} and exists (select 1 from moved)`)
    .returning({ ...getTableColumns(t), headRowCount: sql<number>`(select row_count from moved)` })
    .prepare(name);
});

interface Refreshed {
  id: string;
  owner: string;
  version: number;
  /** The data key the new ciphertexts are sealed under: the grant's when it was read. */
  dataKeyId: string;
  tokens: RefreshedTokens;
}

/** The refreshed values as one JSON document, for refreshedValues. */
function refreshedJson(results: Refreshed[]): string {
  return JSON.stringify(
    results.map(({ id, owner, version, dataKeyId, tokens }) => ({
      id,
      owner,
      version,
      data_key_id: dataKeyId,
      access_token_enc: tokens.accessTokenEnc,
      refresh_token_enc: tokens.refreshTokenEnc ?? null,
      token_type: tokens.tokenType,
      scope: tokens.scope ?? null,
      access_token_expires_at: iso(tokens.accessTokenExpiresAt),
      refresh_token_expires_at: iso(tokens.refreshTokenExpiresAt),
      refresh_token_expiry_fixed: tokens.refreshTokenExpiryFixed,
      last_refreshed_at: iso(tokens.lastRefreshedAt),
      presented_token_sha256: tokens.presentedTokenSha256 ?? null,
    })),
  );
}

/** The refreshed values (refreshedJson) as a table `v`, from one JSON parameter. */
function refreshedValues(json: string | Placeholder) {
  return sql`json_to_recordset(${json}::json) as v(id uuid, owner text, version integer, data_key_id uuid, access_token_enc text,
    refresh_token_enc text, token_type text, scope text, access_token_expires_at timestamptz,
    refresh_token_expires_at timestamptz, refresh_token_expiry_fixed boolean, last_refreshed_at timestamptz,
    presented_token_sha256 text)`;
}

/**
 * A refreshed grant's row: still the version read, the lease still ours (or lapsed unclaimed), and
 * still under the data key the new ciphertexts were sealed with. A re-encryption moves a grant whose
 * lease lapsed to a new key without moving its version; a late writer's old-key ciphertexts would
 * then be stored under the new key's id, and the key they need is deleted when the run ends.
 */
const REFRESHED_MATCH = sql`${t.id} = v.id and ${t.version} = v.version and (${t.leaseOwner} = v.owner or ${t.leaseOwner} is null) and ${t.dataKeyId} = v.data_key_id`;

const REFRESHED_SET = {
  accessTokenEnc: sql`v.access_token_enc`,
  // A response without a refresh token (or scope) keeps the stored one.
  refreshTokenEnc: sql`coalesce(v.refresh_token_enc, ${t.refreshTokenEnc})`,
  tokenType: sql`v.token_type`,
  scope: sql`coalesce(v.scope, ${t.scope})`,
  accessTokenExpiresAt: sql`v.access_token_expires_at`,
  refreshTokenExpiresAt: sql`v.refresh_token_expires_at`,
  refreshTokenExpiryFixed: sql`v.refresh_token_expiry_fixed`,
  lastRefreshedAt: sql`v.last_refreshed_at`,
  // Filled once, for a grant stored before the column: never replaced (it names the token the grant
  // was stored with, which a rotation does not change).
  refreshTokenSha256: sql`coalesce(${t.refreshTokenSha256}, v.presented_token_sha256)`,
  version: sql`${t.version} + 1`,
  leaseOwner: null,
  leaseExpiresAt: null,
  refreshInFlightSince: null,
  cooldownUntil: null,
  lastErrorCode: null,
  lastErrorMessage: null,
  lastErrorAt: null,
  updatedAt: sql`now()`,
};

/** Records a failed refresh: the error, the cool-down, and the lease released. The tokens stay. */
export async function recordFailure(
  db: Db,
  id: string,
  owner: string,
  version: number,
  failure: { code: string; message: string; cooldownMs: number | null; clearInFlight: boolean },
): Promise<boolean> {
  const updated = await db
    .update(t)
    .set({
      lastErrorCode: failure.code,
      lastErrorMessage: failure.message,
      lastErrorAt: sql`now()`,
      // By the database's clock, as leases are: a host whose clock is off would stretch or erase it.
      cooldownUntil:
        failure.cooldownMs === null ? null : sql`now() + ${failure.cooldownMs} * interval '1 millisecond'`,
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

/** A grant the sweep claimed, with what refreshing it needs first: its wrapped data key. */
export interface ClaimedGrant {
  grant: GrantRow;
  dataKey: WrappedDataKey;
}

/**
 * Claims grants that are due for a refresh, for the daemon's sweep: access token expiring within the
 * window, or unused for long enough that the platform could drop the refresh token. Rows another
 * daemon is claiming right now are skipped (SKIP LOCKED), and the lease set here keeps them ours
 * while we refresh; a daemon that dies leaves leases that simply lapse. One statement: the claim
 * answers the rows as they were before it (an earlier refresh's unknown outcome included) and their
 * wrapped data keys.
 */
export async function claimDue(
  db: Db,
  owner: string,
  leaseMs: number,
  windowMs: number,
  keepAliveDays: Record<string, number>,
  limit: number,
  /** Platforms rate limiting this daemon for now: their grants are left for later. */
  paused: string[] = [],
  /**
   * Grants whose last answer this process holds, not yet stored: claimed, they would be given back at
   * once (nothing may be sent until the answer is stored) and claimed again, round after round, and
   * a lease taken meanwhile by another owner than the held answer's would keep its write out.
   */
  held: string[] = [],
): Promise<ClaimedGrant[]> {
  const rows = await claim(db, {
    owner,
    paused: JSON.stringify(paused),
    held: JSON.stringify(held),
    lease: `${leaseMs} milliseconds`,
    window: `${windowMs} milliseconds`,
    // Per platform, how long a grant may go unused ({"google_ads": "60 days", …}); others never.
    keepAlive: JSON.stringify(
      Object.fromEntries(Object.entries(keepAliveDays).map(([platform, days]) => [platform, `${days} days`])),
    ),
    limit,
  });
  return rows.map(({ inFlightBefore, wrappedKey, kekId, kekKind, ...grant }) => ({
    // As it was before the claim: an earlier refresh's unknown outcome, or none.
    grant: { ...grant, refreshInFlightSince: inFlightBefore },
    dataKey: { id: grant.dataKeyId, wrappedKey, kekId, kekKind } as WrappedDataKey,
  }));
}

const claim = prepared('credvault_claim_due', (db, name) => {
  const p = (key: string) => sql.placeholder(key);
  const due = db.$with('due').as(
    db
      .select({
        dueId: sql<string>`${t.id}`.as('due_id'),
        inFlight: sql<Date | null>`${t.refreshInFlightSince}`
          .mapWith(t.refreshInFlightSince)
          .as('due_in_flight'),
        wrappedKey: sql<string>`${dataKeys.wrappedKey}`.as('due_wrapped_key'),
        kekId: sql<string>`${dataKeys.kekId}`.as('due_kek_id'),
        kekKind: sql<string>`${dataKeys.kekKind}`.as('due_kek_kind'),
      })
      .from(t)
      .innerJoin(dataKeys, eq(dataKeys.id, t.dataKeyId))
      .where(
        sql`(${t.leaseExpiresAt} is null or ${t.leaseExpiresAt} < now())
        and (${t.cooldownUntil} is null or ${t.cooldownUntil} < now())
        and ${t.refreshTokenEnc} is not null
        and not jsonb_exists(${p('paused')}::jsonb, ${t.platform})
        and not jsonb_exists(${p('held')}::jsonb, ${t.id}::text)
        and exists (
          select 1 from ad_account_connections c
          where c.token_id = ${t.id} and c.status in ('active', 'error')
        )
        and (
          (${t.accessTokenExpiresAt} < now() + ${p('window')}::interval
            -- Never earlier than half-way through the token's life: a window longer than a platform's
            -- tokens live (2h for 1h tokens) would refresh each grant again at every sweep.
            and (${t.lastRefreshedAt} is null
              or ${t.accessTokenExpiresAt} < now() + (${t.accessTokenExpiresAt} - ${t.lastRefreshedAt}) / 2))
          or ${t.lastRefreshedAt} < now() - (${p('keepAlive')}::jsonb ->> ${t.platform})::interval
          -- A refresh token with no access token yet (imported): refreshed at once, which also shows
          -- whether the platform still takes it, before an idle one is dropped.
          or ${t.accessTokenEnc} is null
        )
        -- A platform whose tokens live shorter than the window would otherwise be refreshed in a loop.
        and (${t.lastRefreshedAt} is null or ${t.lastRefreshedAt} < now() - interval '1 minute')`,
      )
      .orderBy(sql`${t.accessTokenExpiresAt} asc nulls last`)
      .limit(p('limit'))
      .for('update', { of: t, skipLocked: true }),
  );
  return db
    .with(due)
    .update(t)
    .set({
      leaseOwner: sql`${p('owner')}`,
      leaseExpiresAt: sql`now() + ${p('lease')}::interval`,
      // The refresh leaves right after the claim: it is in flight from here on.
      refreshInFlightSince: sql`coalesce(${t.refreshInFlightSince}, now())`,
    })
    .from(due)
    .where(eq(t.id, due.dueId))
    .returning({
      ...getTableColumns(t),
      inFlightBefore: due.inFlight,
      wrappedKey: due.wrappedKey,
      kekId: due.kekId,
      kekKind: due.kekKind,
    })
    .prepare(name);
});

/**
 * When the next sweep has work: the earliest access-token expiry less the refresh window, or later
 * for a grant that is cooling down or leased (a sweep would not claim it before then).
 */
export async function nextDue(db: Db, windowMs: number): Promise<Date | null> {
  const [row] = await db
    .select({
      at: sql<Date | string | null>`min(greatest(case when ${t.accessTokenEnc} is null then now()
        else ${t.accessTokenExpiresAt} - least(${`${windowMs} milliseconds`}::interval,
          coalesce((${t.accessTokenExpiresAt} - ${t.lastRefreshedAt}) / 2, ${`${windowMs} milliseconds`}::interval)) end,
        ${t.cooldownUntil}, ${t.leaseExpiresAt}))`,
    })
    .from(t)
    .where(sql`${t.refreshTokenEnc} is not null
      and (${t.accessTokenExpiresAt} is not null or ${t.accessTokenEnc} is null) and exists (
      select 1 from ad_account_connections c where c.token_id = ${t.id} and c.status in ('active', 'error'))`);
  const at = row?.at;
  return at ? new Date(at) : null;
}

/**
 * Grants no connection holds: where a `connections add` that did not finish kept the platform's answer
 * to its refresh (services/connect.ts, keepAdoptedAnswer), waiting for the same token to be added again.
 */
export function countUnattached(
  db: Db,
  appId?: string,
): Promise<Array<{ platform: string; app: string; n: number }>> {
  return db
    .select({ platform: t.platform, app: oauthAppCredentials.label, n: sql<number>`count(*)::int` })
    .from(t)
    .innerJoin(oauthAppCredentials, eq(oauthAppCredentials.id, t.appId))
    .where(
      and(
        sql`not exists (select 1 from ad_account_connections c where c.token_id = ${t.id})`,
        appId ? eq(t.appId, appId) : undefined,
      ),
    )
    .groupBy(t.platform, oauthAppCredentials.label)
    .orderBy(t.platform, oauthAppCredentials.label);
}

/** The earliest access-token expiry among connections in use (the daemon's gauge of it). */
export async function nextExpiry(db: Db): Promise<Date | null> {
  const [row] = await db
    .select({ at: sql<Date | string | null>`min(${t.accessTokenExpiresAt})` })
    .from(t)
    .where(sql`${t.refreshTokenEnc} is not null and exists (
      select 1 from ad_account_connections c where c.token_id = ${t.id} and c.status in ('active', 'error'))`);
  const at = row?.at;
  return at ? new Date(at) : null;
}
