import { and, asc, count, eq, type SQL, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { adAccountConnections, oauthAppCredentials } from '../schema/index.js';

export type AppRow = typeof oauthAppCredentials.$inferSelect;
export type NewAppRow = typeof oauthAppCredentials.$inferInsert;
/** An app without its encrypted columns: what everything but the secret readers gets. */
export type AppRecord = Omit<AppRow, 'clientSecretEnc' | 'developerTokenEnc'> & {
  hasClientSecret: boolean;
  hasDeveloperToken: boolean;
};

const t = oauthAppCredentials;
const publicColumns = {
  id: t.id,
  platform: t.platform,
  label: t.label,
  clientId: t.clientId,
  dataKeyId: t.dataKeyId,
  redirectUri: t.redirectUri,
  scopes: t.scopes,
  loginCustomerId: t.loginCustomerId,
  userAgent: t.userAgent,
  apiVersion: t.apiVersion,
  authorizeUrl: t.authorizeUrl,
  tokenUrl: t.tokenUrl,
  revokeUrl: t.revokeUrl,
  apiBaseUrl: t.apiBaseUrl,
  enabled: t.enabled,
  createdBy: t.createdBy,
  createdAt: t.createdAt,
  updatedAt: t.updatedAt,
};

const recordColumns = {
  ...publicColumns,
  hasClientSecret: sql<boolean>`${t.clientSecretEnc} is not null`,
  hasDeveloperToken: sql<boolean>`${t.developerTokenEnc} is not null`,
};

async function selectRecords(db: Db, where: SQL | undefined): Promise<AppRecord[]> {
  return db.select(recordColumns).from(t).where(where).orderBy(asc(t.platform), asc(t.label));
}

export async function getById(db: Db, id: string): Promise<AppRecord | null> {
  return (await selectRecords(db, eq(t.id, id)))[0] ?? null;
}

/**
 * The app, its row locked FOR SHARE for the rest of the transaction: no update or removal of it
 * commits until then, so what is read of it (its secrets too) is one version of it.
 */
export async function getByIdForShare(db: Db, id: string): Promise<AppRecord | null> {
  const [row] = await db.select(recordColumns).from(t).where(eq(t.id, id)).for('share');
  return row ?? null;
}

export async function findByLabel(db: Db, label: string, platform?: string): Promise<AppRecord[]> {
  return selectRecords(db, platform ? and(eq(t.label, label), eq(t.platform, platform)) : eq(t.label, label));
}

export async function list(db: Db, platform?: string): Promise<AppRecord[]> {
  return selectRecords(db, platform ? eq(t.platform, platform) : undefined);
}

/** The one function that returns an app's encrypted secrets. */
export async function getEncryptedSecrets(
  db: Db,
  id: string,
): Promise<{ clientSecretEnc: string | null; developerTokenEnc: string | null } | null> {
  const [row] = await db
    .select({ clientSecretEnc: t.clientSecretEnc, developerTokenEnc: t.developerTokenEnc })
    .from(t)
    .where(eq(t.id, id));
  return row ?? null;
}

export async function insert(db: Db, row: NewAppRow): Promise<void> {
  await db.insert(t).values(row);
}

export async function update(db: Db, id: string, changes: Partial<NewAppRow>): Promise<void> {
  await db.update(t).set(changes).where(eq(t.id, id));
}

export async function remove(db: Db, id: string): Promise<void> {
  await db.delete(t).where(eq(t.id, id));
}

export async function countConnections(db: Db, appId: string): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(adAccountConnections)
    .where(eq(adAccountConnections.appId, appId));
  return Number(row?.n ?? 0);
}
