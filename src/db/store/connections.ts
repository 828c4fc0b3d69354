import { and, asc, eq, inArray, lt, type SQL, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import {
  adAccountConnections,
  dataKeys,
  oauthAppCredentials,
  oauthStates,
  oauthTokensVault,
} from '../schema/index.js';
import { notifyChange } from './changes.js';
import { prepared } from './prepared.js';

export type ConnectionRow = typeof adAccountConnections.$inferSelect;
export type NewConnectionRow = typeof adAccountConnections.$inferInsert;

const c = adAccountConnections;
const g = oauthTokensVault;

/** A connection with what its views show: the app's label and the grant's expiry bookkeeping. */
const viewColumns = {
  id: c.id,
  platform: c.platform,
  appId: c.appId,
  appLabel: oauthAppCredentials.label,
  tokenId: c.tokenId,
  externalAccountId: c.externalAccountId,
  accountName: c.accountName,
  name: c.name,
  status: c.status,
  statusMessage: c.statusMessage,
  consecutiveFailures: c.consecutiveFailures,
  details: c.details,
  connectedBy: c.connectedBy,
  createdAt: c.createdAt,
  updatedAt: c.updatedAt,
  accessTokenExpiresAt: g.accessTokenExpiresAt,
  refreshTokenExpiresAt: g.refreshTokenExpiresAt,
  refreshTokenExpiryFixed: g.refreshTokenExpiryFixed,
  lastRefreshedAt: g.lastRefreshedAt,
  hasRefreshToken: sql<boolean>`${g.refreshTokenEnc} is not null`,
  refreshInFlightSince: g.refreshInFlightSince,
  leaseExpiresAt: g.leaseExpiresAt,
  cooldownUntil: g.cooldownUntil,
  lastErrorCode: g.lastErrorCode,
  lastErrorMessage: g.lastErrorMessage,
  lastErrorAt: g.lastErrorAt,
};

export interface ConnectionView
  extends Pick<
    ConnectionRow,
    | 'id'
    | 'platform'
    | 'appId'
    | 'tokenId'
    | 'externalAccountId'
    | 'accountName'
    | 'name'
    | 'status'
    | 'statusMessage'
    | 'consecutiveFailures'
    | 'details'
    | 'connectedBy'
    | 'createdAt'
    | 'updatedAt'
  > {
  appLabel: string;
  /** The grant's fields; null when the connection has no grant (revoked). */
  accessTokenExpiresAt: Date | null;
  refreshTokenExpiresAt: Date | null;
  /** The platform's own end, which a refresh does not move (else one from disuse, which it does). */
  refreshTokenExpiryFixed: boolean | null;
  lastRefreshedAt: Date | null;
  hasRefreshToken: boolean | null;
  refreshInFlightSince: Date | null;
  leaseExpiresAt: Date | null;
  cooldownUntil: Date | null;
  lastErrorCode: string | null;
  lastErrorMessage: string | null;
  lastErrorAt: Date | null;
}

function selectViews(db: Db, where: SQL | undefined) {
  return db
    .select(viewColumns)
    .from(c)
    .innerJoin(oauthAppCredentials, eq(oauthAppCredentials.id, c.appId))
    .leftJoin(g, eq(g.id, c.tokenId))
    .where(where)
    .orderBy(asc(c.platform), asc(c.externalAccountId)) as unknown as Promise<ConnectionView[]>;
}

export async function view(db: Db, id: string): Promise<ConnectionView | null> {
  return (await selectViews(db, eq(c.id, id)))[0] ?? null;
}

export async function listViews(
  db: Db,
  filter: { platform?: string; status?: string; ids?: string[]; accounts?: string[] },
) {
  const where: SQL[] = [];
  if (filter.platform) where.push(eq(c.platform, filter.platform));
  if (filter.accounts)
    where.push(inArray(c.externalAccountId, filter.accounts.length ? filter.accounts : ['']));
  if (filter.status) where.push(eq(c.status, filter.status));
  if (filter.ids)
    where.push(inArray(c.id, filter.ids.length ? filter.ids : ['00000000-0000-0000-0000-000000000000']));
  return selectViews(db, where.length ? and(...where) : undefined);
}

export async function getById(db: Db, id: string): Promise<ConnectionRow | null> {
  const [row] = await db.select().from(c).where(eq(c.id, id));
  return row ?? null;
}

export async function getByAccount(
  db: Db,
  platform: string,
  externalAccountId: string,
): Promise<ConnectionRow | null> {
  const [row] = await db
    .select()
    .from(c)
    .where(and(eq(c.platform, platform), eq(c.externalAccountId, externalAccountId)));
  return row ?? null;
}

export async function getByName(db: Db, name: string): Promise<ConnectionRow | null> {
  const [row] = await db.select().from(c).where(eq(c.name, name));
  return row ?? null;
}

export async function listByGrant(db: Db, tokenId: string): Promise<ConnectionRow[]> {
  return db.select().from(c).where(eq(c.tokenId, tokenId)).orderBy(asc(c.externalAccountId));
}

/** The first connection (by account id, as listByGrant orders them) of each of several grants. */
export async function firstByGrants(db: Db, tokenIds: string[]): Promise<Map<string, ConnectionRow>> {
  const first = new Map<string, ConnectionRow>();
  if (!tokenIds.length) return first;
  // A uuid[] literal: grant ids are uuids (their characters need no quoting).
  const rows = await connectionsOfGrants(db, { ids: `{${tokenIds.join(',')}}` });
  for (const row of rows) if (row.tokenId && !first.has(row.tokenId)) first.set(row.tokenId, row);
  return first;
}

// The grant ids as one array parameter: one statement text whatever their number (prepared).
const connectionsOfGrants = prepared('credvault_connections_of_grants', (db, name) =>
  db
    .select()
    .from(c)
    .where(sql`${c.tokenId} = any(${sql.placeholder('ids')}::uuid[])`)
    .orderBy(asc(c.externalAccountId))
    .prepare(name),
);

export async function insert(db: Db, row: NewConnectionRow): Promise<void> {
  await db.insert(c).values(row);
}

export async function update(db: Db, id: string, changes: Partial<NewConnectionRow>): Promise<void> {
  await db
    .update(c)
    .set({ ...changes, updatedAt: sql`now()` })
    .where(eq(c.id, id));
  await notifyChange(db, 'connection', id);
}

/** The connections sharing a grant move together: one consent, one status. */
export async function updateByGrant(
  db: Db,
  tokenId: string,
  changes: Partial<NewConnectionRow>,
): Promise<void> {
  await db
    .update(c)
    .set({ ...changes, updatedAt: sql`now()` })
    .where(eq(c.tokenId, tokenId));
  await notifyChange(db, 'grant', tokenId);
}

/**
 * A grant's connections healthy again after a refresh worked: those in `error` or counting failures.
 * Not one that needs a person (or was revoked): nothing refreshes such a connection, so that status
 * was set by someone else while this refresh was out (a revocation the platform could not be told of,
 * another process's refused refresh), and it stands.
 */
export async function reviveByGrant(db: Db, tokenId: string): Promise<void> {
  await db
    .update(c)
    .set({ status: 'active', statusMessage: null, consecutiveFailures: 0, updatedAt: sql`now()` })
    .where(and(eq(c.tokenId, tokenId), inArray(c.status, ['active', 'error'])));
  await notifyChange(db, 'grant', tokenId);
}

export async function countAll(db: Db): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(c);
  return Number(row?.n ?? 0);
}

export async function countByGrant(db: Db, tokenId: string): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(c).where(eq(c.tokenId, tokenId));
  return Number(row?.n ?? 0);
}

/** One connection of each grant an app's connections hold (revoking it revokes the grant). */
export async function oneConnectionPerGrantOfApp(db: Db, appId: string): Promise<string[]> {
  const rows = await db
    .selectDistinctOn([c.tokenId], { id: c.id })
    .from(c)
    .where(and(eq(c.appId, appId), sql`${c.tokenId} is not null`));
  return rows.map((r) => r.id);
}

/** An app's connections that hold tokens (a revoked one holds none), by platform and account. */
export async function listHoldingOfApp(db: Db, appId: string): Promise<ConnectionRow[]> {
  return db
    .select()
    .from(c)
    .where(and(eq(c.appId, appId), sql`${c.tokenId} is not null`))
    .orderBy(asc(c.platform), asc(c.externalAccountId));
}

/** Deletes an app's connections, their grants' tokens and the grants' own data keys. */
export async function removeAllOfApp(db: Db, appId: string): Promise<void> {
  const grants = await db.select({ id: g.id, dataKeyId: g.dataKeyId }).from(g).where(eq(g.appId, appId));
  await db.delete(c).where(eq(c.appId, appId));
  await notifyChange(db, 'app', appId);
  // Its pending states stay (their app_id goes null with the app) so that a callback is refused as
  // the answer to a removed app's authorization; their PKCE verifiers go now. Those expired already
  // go too: no callback can use them, and nothing would purge them until the next connect starts
  // (or the daemon's next pass).
  await db
    .delete(oauthStates)
    .where(and(eq(oauthStates.appId, appId), lt(oauthStates.expiresAt, sql`now()`)));
  await db.update(oauthStates).set({ codeVerifierEnc: null }).where(eq(oauthStates.appId, appId));
  if (grants.length) {
    await db.delete(g).where(
      inArray(
        g.id,
        grants.map((grant) => grant.id),
      ),
    );
    await db.delete(dataKeys).where(
      inArray(
        dataKeys.id,
        grants.map((grant) => grant.dataKeyId),
      ),
    );
  }
}
