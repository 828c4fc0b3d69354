import { inArray, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { adAccountConnections, apiClients, oauthTokensVault } from '../schema/index.js';

/** What the daemon's caches depend on, for the given rows: read to find stale entries. */
export async function snapshot(db: Db, connectionIds: string[], clientIds: string[]) {
  const c = adAccountConnections;
  const g = oauthTokensVault;
  const connections = connectionIds.length
    ? await db
        .select({ id: c.id, status: c.status, tokenId: c.tokenId, name: c.name, version: g.version })
        .from(c)
        .leftJoin(g, sql`${g.id} = ${c.tokenId}`)
        .where(inArray(c.id, connectionIds))
    : [];
  const clients = clientIds.length
    ? await db
        .select({ id: apiClients.id, revokedAt: apiClients.revokedAt, expiresAt: apiClients.expiresAt })
        .from(apiClients)
        .where(inArray(apiClients.id, clientIds))
    : [];
  return { connections, clients };
}

/** Active connections whose refresh token ends within `days` (LinkedIn's fixed 365 days, idle limits). */
export async function refreshTokensEnding(db: Db, days: number) {
  const c = adAccountConnections;
  const g = oauthTokensVault;
  return (
    db
      .select({
        id: c.id,
        platform: c.platform,
        account: c.externalAccountId,
        name: c.name,
        endsAt: g.refreshTokenExpiresAt,
      })
      .from(c)
      .innerJoin(g, sql`${g.id} = ${c.tokenId}`)
      // Fixed ends only (LinkedIn's 365 days, Google's 7 in Testing): an end that use moves (Microsoft's
      // 90 idle days) is the keep-alive refresh's to renew, not a person's.
      .where(
        sql`${c.status} = 'active' and ${g.refreshTokenExpiryFixed} and ${g.refreshTokenExpiresAt} < now() + ${`${days} days`}::interval`,
      )
  );
}

export async function connectionCounts(db: Db) {
  const c = adAccountConnections;
  return db
    .select({ platform: c.platform, status: c.status, n: sql<number>`count(*)::int` })
    .from(c)
    .groupBy(c.platform, c.status);
}
