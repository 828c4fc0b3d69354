import { and, eq, inArray, sql } from 'drizzle-orm';
import type { WrappedDataKey } from '../../crypto/envelope.js';
import { KeyError } from '../../errors.js';
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

/** The active vault data key: its id, and the key id that wraps it (the master key the vault answers to now). */
export async function activeVaultKey(db: Db): Promise<{ id: string; kekId: string } | null> {
  const [row] = await db
    .select({ id: dataKeys.id, kekId: dataKeys.kekId })
    .from(dataKeys)
    .where(and(eq(dataKeys.scope, 'vault'), eq(dataKeys.status, 'active')));
  return row ?? null;
}

/**
 * What wraps the vault's data keys now (the active vault key's, else the newest data key's): its key
 * id and kind (local, or a KMS). Null for a vault with no data key yet.
 */
export async function vaultKek(db: Db): Promise<{ kekId: string; kekKind: string } | null> {
  const [row] = await db
    .select({ kekId: dataKeys.kekId, kekKind: dataKeys.kekKind })
    .from(dataKeys)
    .orderBy(sql`(${dataKeys.status} = 'active') desc`, sql`${dataKeys.createdAt} desc`)
    .limit(1);
  return row ?? null;
}

export async function activeVaultKeyId(db: Db): Promise<string | null> {
  return (await activeVaultKey(db))?.id ?? null;
}

/**
 * Inserts a data key; returns false when another process made the active vault key first. Refuses a
 * key wrapped by another key-encryption key than the vault's: a process started before a rotation
 * must not add a data key the new master key cannot open. (The active vault key is read FOR SHARE,
 * so this waits for a rotation in progress and then sees its outcome.)
 */
export async function insert(db: Db, key: WrappedDataKey, scope: DataKeyScope): Promise<boolean> {
  const [current] = await db
    .select({ kekId: dataKeys.kekId })
    .from(dataKeys)
    .where(and(eq(dataKeys.scope, 'vault'), eq(dataKeys.status, 'active')))
    .for('share');
  if (current && current.kekId !== key.kekId) {
    throw new KeyError(
      `the vault's master key was rotated (it is now key id ${current.kekId}; this process has ${key.kekId})`,
      {
        hint: 'Run again with the new key (a running daemon: reload it with SIGHUP once its key source holds the new key).',
      },
    );
  }
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
      wrappedKey: dataKeys.wrappedKey,
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

/**
 * The data keys under a key-encryption key, with the table locked against writers for the rest of the
 * transaction: a rotation re-wraps them all at once. EXCLUSIVE mode lets readers on (a running
 * `token get` or daemon keeps opening secrets) but holds back every insert, update and row lock,
 * including the FOR SHARE read of the active vault key that comes before making a new data key, so
 * no key can be added under the old master key while this runs, or after it commits. One table lock
 * instead of a row lock on each of many thousand rows.
 */
export async function lockAll(db: Db, kekId?: string) {
  await db.execute(sql`lock table ${dataKeys} in exclusive mode`);
  return db
    .select(wrappedColumns)
    .from(dataKeys)
    .where(kekId ? eq(dataKeys.kekId, kekId) : undefined);
}

/** How many data keys each key-encryption key wraps. */
export async function countByKek(db: Db): Promise<Array<{ kekId: string; n: number }>> {
  const rows = await db
    .select({ kekId: dataKeys.kekId, n: sql<number>`count(*)::int` })
    .from(dataKeys)
    .groupBy(dataKeys.kekId);
  return rows.map((r) => ({ kekId: r.kekId, n: Number(r.n) }));
}

/**
 * New wrapped forms for data keys: one statement per 10,000, its rows in a single JSON parameter
 * (a VALUES list would cost a bound parameter, and its parsing, per field).
 */
export async function rewrap(db: Db, keys: WrappedDataKey[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 10_000) {
    const rows = keys.slice(i, i + 10_000).map((k) => ({
      id: k.id,
      wrapped_key: k.wrappedKey,
      kek_id: k.kekId,
      kek_kind: k.kekKind,
    }));
    await db.execute(sql`
      update ${dataKeys} set wrapped_key = v.wrapped_key, kek_id = v.kek_id, kek_kind = v.kek_kind, rewrapped_at = now()
      from json_to_recordset(${JSON.stringify(rows)}::json) as v(id uuid, wrapped_key text, kek_id text, kek_kind text)
      where ${dataKeys.id} = v.id`);
  }
}

/** How many data keys of a scope are in a status. */
export async function countWithStatus(db: Db, scope: DataKeyScope, status: string): Promise<number> {
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(dataKeys)
    .where(and(eq(dataKeys.scope, scope), eq(dataKeys.status, status)));
  return Number(row?.n ?? 0);
}

/** Many data keys in one statement (their rows in one JSON parameter). */
export async function insertMany(db: Db, keys: WrappedDataKey[], scope: DataKeyScope): Promise<void> {
  if (!keys.length) return;
  const rows = keys.map((k) => ({
    id: k.id,
    wrapped_key: k.wrappedKey,
    kek_id: k.kekId,
    kek_kind: k.kekKind,
  }));
  await db.execute(sql`
    insert into ${dataKeys} (id, scope, wrapped_key, kek_id, kek_kind)
    select v.id, ${scope}, v.wrapped_key, v.kek_id, v.kek_kind
    from json_to_recordset(${JSON.stringify(rows)}::json) as v(id uuid, wrapped_key text, kek_id text, kek_kind text)`);
}

export async function destroyMany(db: Db, ids: string[]): Promise<void> {
  if (ids.length) await db.delete(dataKeys).where(inArray(dataKeys.id, ids));
}

export async function setStatus(
  db: Db,
  where: { scope: DataKeyScope; from: string },
  to: string,
): Promise<void> {
  await db
    .update(dataKeys)
    .set({ status: to, ...(to === 'retired' ? { retiredAt: sql`now()` } : {}) })
    .where(and(eq(dataKeys.scope, where.scope), eq(dataKeys.status, where.from)));
}

export async function idsWithStatus(db: Db, scope: DataKeyScope, status: string): Promise<string[]> {
  const rows = await db
    .select({ id: dataKeys.id })
    .from(dataKeys)
    .where(and(eq(dataKeys.scope, scope), eq(dataKeys.status, status)));
  return rows.map((r) => r.id);
}

/** Retires data keys whose rows moved to new keys; they are destroyed when the whole run ends. */
export async function retireMany(db: Db, ids: string[]): Promise<void> {
  if (!ids.length) return;
  await db.execute(sql`
    update ${dataKeys} set status = 'retired', retired_at = now()
    where ${dataKeys.id} in (select value::uuid from json_array_elements_text(${JSON.stringify(ids)}::json))`);
}

/** Destroys every data key of a scope in a status (re-encryption's retired keys, at its end). */
export async function destroyWithStatus(db: Db, scope: DataKeyScope, status: string): Promise<void> {
  await db.delete(dataKeys).where(and(eq(dataKeys.scope, scope), eq(dataKeys.status, status)));
}
