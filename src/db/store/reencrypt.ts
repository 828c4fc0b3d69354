import { and, eq, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import type { Db } from '../client.js';
import { dataKeys, oauthAppCredentials, oauthStates, oauthTokensVault } from '../schema/index.js';

/**
 * Rows whose secrets are under given data keys, for re-encryption in batches. Each batch is taken
 * FOR UPDATE SKIP LOCKED (two re-encrypting processes share the work), and grants being refreshed
 * (a live lease) are left for a later batch: their refresher writes under the key it read.
 */

const g = oauthTokensVault;
const a = oauthAppCredentials;
const s = oauthStates;

const leaseFree = or(isNull(g.leaseExpiresAt), lt(g.leaseExpiresAt, sql`now()`));
const onRetiringKey = and(eq(dataKeys.scope, 'grant'), eq(dataKeys.status, 'retiring'));

/**
 * A batch of grants whose data key is being retired, with that key's wrapped form (so the batch opens
 * them without a query per grant). Found through the data keys' status, not a list of key ids: the
 * cost of a batch does not grow with the vault.
 */
export async function grantsOnRetiringKeys(db: Db, limit: number) {
  return db
    .select({
      id: g.id,
      dataKeyId: g.dataKeyId,
      accessTokenEnc: g.accessTokenEnc,
      refreshTokenEnc: g.refreshTokenEnc,
      wrappedKey: dataKeys.wrappedKey,
      kekId: dataKeys.kekId,
      kekKind: dataKeys.kekKind,
    })
    .from(g)
    .innerJoin(dataKeys, eq(dataKeys.id, g.dataKeyId))
    .where(and(onRetiringKey, leaseFree))
    .limit(limit)
    .for('update', { of: g, skipLocked: true });
}

/** How many grants are still under a retiring data key (those a refresh holds, when a batch found none). */
export async function grantsOnRetiringKeysCount(db: Db): Promise<number> {
  const [row] = await db
    .select({ n: sql<number>`count(*)::int` })
    .from(g)
    .innerJoin(dataKeys, eq(dataKeys.id, g.dataKeyId))
    .where(onRetiringKey);
  return Number(row?.n ?? 0);
}

/** The secrets of grants under a retiring data key (the work of a re-encryption, for its progress). */
export async function secretsOnRetiringKeys(db: Db): Promise<number> {
  const [row] = await db
    .select({ n: sql<number>`(count(${g.accessTokenEnc}) + count(${g.refreshTokenEnc}))::int` })
    .from(g)
    .innerJoin(dataKeys, eq(dataKeys.id, g.dataKeyId))
    .where(onRetiringKey);
  return Number(row?.n ?? 0);
}

export async function appsOnKeys(db: Db, keyIds: string[], limit: number) {
  if (!keyIds.length) return [];
  return db
    .select({
      id: a.id,
      dataKeyId: a.dataKeyId,
      clientSecretEnc: a.clientSecretEnc,
      developerTokenEnc: a.developerTokenEnc,
    })
    .from(a)
    .where(inArray(a.dataKeyId, keyIds))
    .limit(limit)
    .for('update', { skipLocked: true });
}

export async function statesOnKeys(db: Db, keyIds: string[], limit: number) {
  if (!keyIds.length) return [];
  return db
    .select({ id: s.id, dataKeyId: s.dataKeyId, codeVerifierEnc: s.codeVerifierEnc })
    .from(s)
    .where(inArray(s.dataKeyId, keyIds))
    .limit(limit)
    .for('update', { skipLocked: true });
}

/**
 * New ciphertexts and data key ids. The version is not moved: the daemon's cache and waiting readers
 * see the same token. A refresher whose lease lapsed meanwhile cannot write its old-key ciphertexts
 * over these: its write also checks the data key (tokens.ts, REFRESHED_MATCH).
 */
export async function updateGrants(
  db: Db,
  rows: Array<{
    id: string;
    dataKeyId: string;
    accessTokenEnc: string | null;
    refreshTokenEnc: string | null;
  }>,
): Promise<void> {
  if (!rows.length) return;
  // One JSON parameter for the whole batch: cheaper to build and to parse than a VALUES list.
  const json = JSON.stringify(
    rows.map((r) => ({
      id: r.id,
      data_key_id: r.dataKeyId,
      access_token_enc: r.accessTokenEnc,
      refresh_token_enc: r.refreshTokenEnc,
    })),
  );
  await db.execute(sql`
    update ${g} set data_key_id = v.data_key_id, access_token_enc = v.access_token_enc, refresh_token_enc = v.refresh_token_enc
    from json_to_recordset(${json}::json) as v(id uuid, data_key_id uuid, access_token_enc text, refresh_token_enc text)
    where ${g.id} = v.id`);
}

export async function updateApps(
  db: Db,
  rows: Array<{
    id: string;
    dataKeyId: string;
    clientSecretEnc: string | null;
    developerTokenEnc: string | null;
  }>,
): Promise<void> {
  if (!rows.length) return;
  const values = sql.join(
    rows.map(
      (r) =>
        sql`(${r.id}::uuid, ${r.dataKeyId}::uuid, ${r.clientSecretEnc}::text, ${r.developerTokenEnc}::text)`,
    ),
    sql`, `,
  );
  await db.execute(sql`
    update ${a} set data_key_id = v.data_key_id, client_secret_enc = v.client_secret_enc, developer_token_enc = v.developer_token_enc
    from (values ${values}) as v(id, data_key_id, client_secret_enc, developer_token_enc)
    where ${a.id} = v.id`);
}

export async function updateStates(
  db: Db,
  rows: Array<{ id: string; dataKeyId: string; codeVerifierEnc: string | null }>,
): Promise<void> {
  if (!rows.length) return;
  const values = sql.join(
    rows.map((r) => sql`(${r.id}::uuid, ${r.dataKeyId}::uuid, ${r.codeVerifierEnc}::text)`),
    sql`, `,
  );
  await db.execute(sql`
    update ${s} set data_key_id = v.data_key_id, code_verifier_enc = v.code_verifier_enc
    from (values ${values}) as v(id, data_key_id, code_verifier_enc)
    where ${s.id} = v.id`);
}

/** Secrets still under these data keys (for progress). */
export async function secretsOnKeys(db: Db, keyIds: string[]): Promise<number> {
  if (!keyIds.length) return 0;
  const [grants] = await db
    .select({ n: sql<number>`(count(${g.accessTokenEnc}) + count(${g.refreshTokenEnc}))::int` })
    .from(g)
    .where(inArray(g.dataKeyId, keyIds));
  const [apps] = await db
    .select({ n: sql<number>`(count(${a.clientSecretEnc}) + count(${a.developerTokenEnc}))::int` })
    .from(a)
    .where(inArray(a.dataKeyId, keyIds));
  const [states] = await db
    .select({ n: sql<number>`count(${s.codeVerifierEnc})::int` })
    .from(s)
    .where(inArray(s.dataKeyId, keyIds));
  return Number(grants?.n ?? 0) + Number(apps?.n ?? 0) + Number(states?.n ?? 0);
}
