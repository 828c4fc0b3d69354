import { and, eq, inArray, sql } from 'drizzle-orm';
import type { WrappedDataKey } from '../../crypto/envelope.js';
import type { Db } from '../client.js';
import { dataKeys, oauthAppCredentials, oauthStates, oauthTokensVault } from '../schema/index.js';

export type DataKeyScope = 'vault' | 'grant';

const wrappedColumns = {
  id: dataKeys.id,
  wrappedKey: dataKeys.wrappedKey,
  kekId: dataKeys.kekId,
  kekKind: dataKeys.kekKind,
};

export async function getWrapped(db: Db, id: string): Promise<WrappedDataKey | null> {
  const [row] = await db.select(wrappedColumns).from(dataKeys).where(eq(dataKeys.id, id));
  return row ?? null;
}

export async function getWrappedMany(db: Db, ids: string[]): Promise<WrappedDataKey[]> {
  if (!ids.length) return [];
  return db.select(wrappedColumns).from(dataKeys).where(inArray(dataKeys.id, ids));
}

export async function activeVaultKeyId(db: Db): Promise<string | null> {
  const [row] = await db
    .select({ id: dataKeys.id })
    .from(dataKeys)
    .where(and(eq(dataKeys.scope, 'vault'), eq(dataKeys.status, 'active')));
  return row?.id ?? null;
}

/** Inserts a data key; returns false when another process made the active vault key first. */
export async function insert(db: Db, key: WrappedDataKey, scope: DataKeyScope): Promise<boolean> {
  const inserted = await db
    .insert(dataKeys)
    .values({ id: key.id, scope, wrappedKey: key.wrappedKey, kekId: key.kekId, kekKind: key.kekKind })
    .onConflictDoNothing()
    .returning({ id: dataKeys.id });
  return inserted.length > 0;
}

export async function destroy(db: Db, id: string): Promise<void> {
  await db.delete(dataKeys).where(eq(dataKeys.id, id));
}

export async function listAll(db: Db) {
  return db
    .select({
      id: dataKeys.id,
      scope: dataKeys.scope,
      status: dataKeys.status,
      kekId: dataKeys.kekId,
      kekKind: dataKeys.kekKind,
      createdAt: dataKeys.createdAt,
      rewrappedAt: dataKeys.rewrappedAt,
    })
    .from(dataKeys)
    .orderBy(dataKeys.createdAt);
}

/** How many secrets each data key protects, across every table that holds ciphertexts. */
export async function secretCounts(db: Db): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const add = (rows: Array<{ id: string; n: number }>) => {
    for (const row of rows) counts.set(row.id, (counts.get(row.id) ?? 0) + Number(row.n));
  };
  add(
    await db
      .select({
        id: oauthAppCredentials.dataKeyId,
        n: sql<number>`(count(${oauthAppCredentials.clientSecretEnc}) + count(${oauthAppCredentials.developerTokenEnc}))::int`,
      })
      .from(oauthAppCredentials)
      .groupBy(oauthAppCredentials.dataKeyId),
  );
  add(
    await db
      .select({
        id: oauthTokensVault.dataKeyId,
        n: sql<number>`(count(${oauthTokensVault.accessTokenEnc}) + count(${oauthTokensVault.refreshTokenEnc}))::int`,
      })
      .from(oauthTokensVault)
      .groupBy(oauthTokensVault.dataKeyId),
  );
  add(
    await db
      .select({ id: oauthStates.dataKeyId, n: sql<number>`count(${oauthStates.codeVerifierEnc})::int` })
      .from(oauthStates)
      .groupBy(oauthStates.dataKeyId),
  );
  return counts;
}
