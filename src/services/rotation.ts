import { randomUUID } from 'node:crypto';
import { Keyring, type Slot, type WrappedDataKey } from '../crypto/envelope.js';
import type { KeySource } from '../crypto/key-source.js';
import { LocalKeySource } from '../crypto/local-key.js';
import type { Db } from '../db/client.js';
import * as dataKeys from '../db/store/data-keys.js';
import * as reencrypt from '../db/store/reencrypt.js';
import { ConflictError, KeyError } from '../errors.js';
import { secretSlot } from './apps.js';
import { recordAudit } from './audit.js';
import { stateSlot } from './connect.js';
import { ServiceContext } from './context.js';
import { grantSlot } from './grants.js';

/**
 * Master-key rotation. Re-wrapping moves every data key from the old key-encryption key to the new
 * one in one transaction: fast whatever the number of secrets (they are not touched), all or nothing.
 * Re-encryption (`--reencrypt`) then gives every secret a new data key, in batches that can be
 * interrupted and resumed: a run that finds data keys being retired carries on where the last stopped.
 */

export interface RewrapReport {
  rewrapped: number;
  total: number;
}

// Data keys re-wrapped per UPDATE: enough that a statement's overhead is small, few enough that the
// database has the next one to write while this process re-wraps the chunk after it.
const REWRAP_CHUNK = 5_000;

/** Re-wraps every data key still under `from` with `to`; keys already under `to` are left as they are. */
export async function rewrapDataKeys(
  ctx: ServiceContext,
  from: KeySource,
  to: KeySource,
): Promise<RewrapReport> {
  const inPlace = from.keyId === to.keyId && from.kind === to.kind;
  if (inPlace && !to.rewrap) {
    throw new KeyError('the new key is the key already in use', {
      hint: 'Give a different key, or none to have one generated.',
    });
  }
  // Both keys local: AES on this machine, without a promise per key. A KMS answers each call in
  // milliseconds: a few calls at once.
  const local = !inPlace && from instanceof LocalKeySource && to instanceof LocalKeySource;
  return ctx.transaction(async (tx) => {
    // Locked rows include the active vault key, which every process creating a data key reads FOR
    // SHARE: none can add a key under the old master key while this runs, or after it commits.
    const rows = await dataKeys.lockAll(tx, from.keyId);
    // A write that failed stops the KMS calls for the chunk after it (the transaction is lost anyway).
    let writeFailed: unknown = null;
    const rewrapChunk = local
      ? rewrapLocally(from, to)
      : (chunk: StoredKey[]) =>
          mapLimit(chunk, 16, async (row): Promise<WrappedDataKey> => {
            if (writeFailed) throw writeFailed;
            const context = { dataKeyId: row.id };
            // The KMS key was rotated: move the wrapped key to its newest version inside the KMS.
            if (inPlace) return rewrapped(to, row.id, await to.rewrap!(row.wrappedKey, context));
            const key = await from.unwrap(row.wrappedKey, context);
            try {
              return rewrapped(to, row.id, await to.wrap(key, context));
            } finally {
              key.fill(0);
            }
          });
    // Chunk by chunk; on PostgreSQL each chunk's UPDATE runs in the database while this process
    // re-wraps the next one (PGlite runs it on this thread: no overlap, no harm).
    let writing: Promise<void> | null = null;
    for (let start = 0; start < rows.length; start += REWRAP_CHUNK) {
      const updates = await rewrapChunk(rows.slice(start, start + REWRAP_CHUNK));
      await writing;
      writing = dataKeys.rewrap(tx, updates);
      // Awaited in the next turn or after the loop; a failure before then must not go unhandled.
      writing.catch((error: unknown) => {
        writeFailed = error;
      });
    }
    await writing;
    const byKek = await dataKeys.countByKek(tx);
    const strays = byKek.filter((k) => k.kekId !== to.keyId);
    const strayCount = strays.reduce((n, k) => n + k.n, 0);
    if (strayCount) {
      // The contract's words for a key that does not open the vault (what `key status` and every
      // other command say), then what this command found.
      throw new KeyError(
        `the master key does not match this vault (expected key id ${strays[0]!.kekId}, got ${from.keyId}): ${strayCount} data key${strayCount === 1 ? ' is' : 's are'} wrapped by key id ${strays[0]!.kekId}, neither the configured key nor the new one (${to.keyId}); nothing was changed`,
        { hint: 'Run with the key that wrapped them (WRAPPED BY in `credvault key status`).' },
      );
    }
    await recordAudit(tx, ctx.actor, {
      action: 'key.rotate',
      targetType: 'vault',
      outcome: 'success',
      detail: {
        from_key_id: from.keyId,
        from_kind: from.kind,
        to_key_id: to.keyId,
        to_kind: to.kind,
        data_keys: rows.length,
        ...(inPlace ? { in_place: true } : {}),
      },
    });
    return { rewrapped: rows.length, total: byKek.reduce((n, k) => n + k.n, 0) };
  });
}

type StoredKey = { id: string; wrappedKey: string };

function rewrapped(to: KeySource, id: string, wrappedKey: string): WrappedDataKey {
  return { id, wrappedKey, kekId: to.keyId, kekKind: to.kind };
}

/**
 * Re-wraps a chunk from one local key to another, giving the event loop a turn every few hundred keys
 * so that the previous chunk's UPDATE (larger than a socket buffer) goes on being sent meanwhile.
 */
function rewrapLocally(from: LocalKeySource, to: LocalKeySource) {
  return async (chunk: StoredKey[]): Promise<WrappedDataKey[]> => {
    const out: WrappedDataKey[] = [];
    for (const row of chunk) {
      if (out.length % 500 === 499) await new Promise(setImmediate);
      const context = { dataKeyId: row.id };
      const key = from.unwrapSync(row.wrappedKey, context);
      try {
        out.push(rewrapped(to, row.id, to.wrapSync(key, context)));
      } finally {
        key.fill(0);
      }
    }
    return out;
  };
}

/** `fn` over `items`, at most `limit` at a time, results in order; the first failure fails it all. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export interface ReencryptReport {
  secrets: number;
  dataKeys: number;
  resumed: boolean;
}

/** Progress of a re-encryption; `waiting` counts grants left because a refresh holds them. */
export type Progress = (done: number, total: number, waiting?: number) => void;

// A batch is one transaction: large enough that its commit is a small part of it, small enough that a
// refresh waiting on one of its rows waits a fraction of a second.
const GRANT_BATCH = 500;
const ROW_BATCH = 200;

/**
 * Gives every secret a new data key. Starting marks the vault key `retired` (a new one becomes
 * active) and every grant key `retiring`; each batch then moves rows off those keys and destroys the
 * old grant keys, so an interrupted run leaves a vault that is consistent and simply resumes.
 */
/** Whether a re-encryption started and did not finish (its old keys are still retiring). */
export async function reencryptionPending(db: Db): Promise<boolean> {
  return (
    (await dataKeys.countWithStatus(db, 'vault', 'retired')) +
      (await dataKeys.countWithStatus(db, 'grant', 'retiring')) >
    0
  );
}

export async function reencryptSecrets(
  ctx: ServiceContext,
  source: KeySource,
  onProgress: Progress = () => {},
): Promise<ReencryptReport> {
  const scoped = new ServiceContext(ctx.database, ctx.config, ctx.actor, source);
  // Loads through `scoped.db`: inside a batch's transaction, the transaction (PGlite has one connection).
  // Grant batches bring their data keys' wrapped forms along; anything else is read when needed.
  const wrappedForms = new Map<string, WrappedDataKey>();
  const keyring = new Keyring(
    source,
    async (id) => wrappedForms.get(id) ?? (await dataKeys.getWrapped(scoped.db, id)),
  );

  // Each batch's decryptions are on record with the batch, whether or not the run ever finishes.
  const batchAudit = (tx: typeof ctx.db, secrets: number) =>
    recordAudit(tx, ctx.actor, {
      action: 'key.reencrypt.batch',
      targetType: 'vault',
      outcome: 'success',
      detail: { secrets },
    });

  // Start, or resume: the first run retires the current keys in one transaction.
  const resumed = await scoped.transaction(async (tx) => {
    // Every data key must answer to the key this run has, before anything changes: with another
    // key (a wrong one configured), the run would make the new vault key under it and then fail on
    // the old ones, leaving a vault that neither key opens whole.
    const strays = (await dataKeys.countByKek(tx)).filter((k) => k.kekId !== source.keyId);
    if (strays.length) {
      const n = strays.reduce((sum, k) => sum + k.n, 0);
      throw new KeyError(
        `${n} data key${n === 1 ? ' is' : 's are'} wrapped by key id ${strays[0]!.kekId}, not by the configured key (${source.keyId}); nothing was changed`,
        { hint: 'Configure the key that opens this vault (`credvault key status` shows which is expected).' },
      );
    }
    if (await reencryptionPending(tx)) return true;
    await recordAudit(tx, ctx.actor, {
      action: 'key.reencrypt.start',
      targetType: 'vault',
      outcome: 'success',
      detail: { kek_id: source.keyId },
    });
    await dataKeys.setStatus(tx, { scope: 'vault', from: 'active' }, 'retired');
    const id = randomUUID();
    const { wrapped } = await keyring.createDataKey(id);
    await dataKeys.insert(tx, wrapped, 'vault');
    await dataKeys.setStatus(tx, { scope: 'grant', from: 'active' }, 'retiring');
    return false;
  });

  const oldVaultKeys = await dataKeys.idsWithStatus(ctx.database.db, 'vault', 'retired');
  const total =
    (await reencrypt.secretsOnKeys(ctx.database.db, oldVaultKeys)) +
    (await reencrypt.secretsOnRetiringKeys(ctx.database.db));
  let done = 0;
  let keysReplaced = 0;
  onProgress(done, total);

  // App secrets and OAuth states move to the new vault key.
  // Made when the run started (or by the run it resumes); read, not opened through a second keyring.
  const vaultKey = await dataKeys.activeVaultKeyId(ctx.database.db);
  if (!vaultKey) throw new KeyError('the new vault data key is missing; run `key rotate --reencrypt` again');
  for (;;) {
    const moved = await scoped.transaction(async (tx) => {
      const apps = await reencrypt.appsOnKeys(tx, oldVaultKeys, ROW_BATCH);
      const states = await reencrypt.statesOnKeys(tx, oldVaultKeys, ROW_BATCH);
      const reseal = async (stored: string | null, slot: Slot) =>
        stored === null ? null : keyring.encrypt(await keyring.decrypt(stored, slot), slot, vaultKey);
      await reencrypt.updateApps(
        tx,
        await Promise.all(
          apps.map(async (row) => ({
            id: row.id,
            dataKeyId: vaultKey,
            clientSecretEnc: await reseal(row.clientSecretEnc, secretSlot(row.id, 'client_secret_enc')),
            developerTokenEnc: await reseal(row.developerTokenEnc, secretSlot(row.id, 'developer_token_enc')),
          })),
        ),
      );
      await reencrypt.updateStates(
        tx,
        await Promise.all(
          states.map(async (row) => ({
            id: row.id,
            dataKeyId: vaultKey,
            codeVerifierEnc: await reseal(row.codeVerifierEnc, stateSlot(row.id)),
          })),
        ),
      );
      const result = {
        rows: apps.length + states.length,
        secrets:
          apps.reduce((n, r) => n + (r.clientSecretEnc ? 1 : 0) + (r.developerTokenEnc ? 1 : 0), 0) +
          states.reduce((n, r) => n + (r.codeVerifierEnc ? 1 : 0), 0),
      };
      if (result.rows) await batchAudit(tx, result.secrets);
      return result;
    });
    if (!moved.rows) break;
    done += moved.secrets;
    onProgress(done, total);
  }

  // Each grant gets a key of its own again; its old key is destroyed with the batch.
  for (let idle = 0; ; ) {
    const moved = await scoped.transaction(async (tx) => {
      const grants = await reencrypt.grantsOnRetiringKeys(tx, GRANT_BATCH);
      if (!grants.length) return -1;
      for (const grant of grants) {
        const { dataKeyId: id, wrappedKey, kekId, kekKind } = grant;
        wrappedForms.set(id, { id, wrappedKey, kekId, kekKind });
      }
      const fresh: WrappedDataKey[] = [];
      const rows = [];
      let secrets = 0;
      for (const grant of grants) {
        const id = randomUUID();
        const { wrapped } = await keyring.createDataKey(id);
        fresh.push(wrapped);
        const move = async (stored: string | null, column: 'access_token_enc' | 'refresh_token_enc') => {
          if (stored === null) return null;
          secrets += 1;
          const slot = grantSlot(grant.id, column);
          return keyring.encrypt(await keyring.decrypt(stored, slot), slot, id);
        };
        rows.push({
          id: grant.id,
          dataKeyId: id,
          accessTokenEnc: await move(grant.accessTokenEnc, 'access_token_enc'),
          refreshTokenEnc: await move(grant.refreshTokenEnc, 'refresh_token_enc'),
        });
      }
      await dataKeys.insertMany(tx, fresh, 'grant');
      await reencrypt.updateGrants(tx, rows);
      // Kept (retired) until the run ends: a reader that read a row just before this batch still
      // finds the key its ciphertext needs.
      await dataKeys.retireMany(
        tx,
        grants.map((g) => g.dataKeyId),
      );
      for (const grant of grants) {
        keyring.forget(grant.dataKeyId);
        wrappedForms.delete(grant.dataKeyId);
      }
      keysReplaced += grants.length;
      await batchAudit(tx, secrets);
      return secrets;
    });
    if (moved < 0) {
      const waiting = await reencrypt.grantsOnRetiringKeysCount(ctx.database.db);
      if (waiting === 0) {
        // Every grant moved; a retiring key no grant uses any more (its grant was revoked) is done too.
        await dataKeys.setStatus(ctx.database.db, { scope: 'grant', from: 'retiring' }, 'retired');
        break;
      }
      // Only grants being refreshed right now are left: wait for their leases.
      if (idle === 0) onProgress(done, total, waiting);
      if (++idle > 120)
        // The grants are busy, not the key wrong: a conflict, to be run again (exit 7).
        throw new ConflictError(
          'some grants stayed leased (being refreshed) for two minutes; run `key rotate --reencrypt` again to finish',
        );
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    idle = 0;
    done += moved;
    onProgress(done, total);
  }

  await scoped.transaction(async (tx) => {
    await dataKeys.destroyMany(tx, oldVaultKeys);
    await dataKeys.destroyWithStatus(tx, 'grant', 'retired');
    await recordAudit(tx, ctx.actor, {
      action: 'key.reencrypt',
      targetType: 'vault',
      outcome: 'success',
      detail: {
        secrets: done,
        grant_keys_replaced: keysReplaced,
        vault_keys_retired: oldVaultKeys.length,
        resumed,
      },
    });
  });
  await keyring.close();
  // New keys made by this run: the grants' and, when it started the work, the vault's.
  return { secrets: done, dataKeys: keysReplaced + (resumed ? 0 : oldVaultKeys.length), resumed };
}
