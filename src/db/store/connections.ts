import { and, eq, inArray } from 'drizzle-orm';
import type { Db } from '../client.js';
import { adAccountConnections, dataKeys, oauthStates, oauthTokensVault } from '../schema/index.js';

/** Deletes an app's connections, their grants' tokens and the grants' own data keys. */
export async function removeAllOfApp(db: Db, appId: string): Promise<void> {
  const grants = await db
    .select({ id: oauthTokensVault.id, dataKeyId: oauthTokensVault.dataKeyId })
    .from(oauthTokensVault)
    .where(eq(oauthTokensVault.appId, appId));
  await db.delete(adAccountConnections).where(eq(adAccountConnections.appId, appId));
  await db.delete(oauthStates).where(eq(oauthStates.appId, appId));
  if (grants.length) {
    await db.delete(oauthTokensVault).where(
      inArray(
        oauthTokensVault.id,
        grants.map((g) => g.id),
      ),
    );
    await db.delete(dataKeys).where(
      inArray(
        dataKeys.id,
        grants.map((g) => g.dataKeyId),
      ),
    );
  }
}

export type ConnectionRow = typeof adAccountConnections.$inferSelect;

const c = adAccountConnections;

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
