import { locateKey } from '../crypto/key-sources.js';
import { generateMasterKey, masterKeyId, parseMasterKey } from '../crypto/local-key.js';
import * as dataKeys from '../db/store/data-keys.js';
import { KeyError } from '../errors.js';
import type { ServiceContext } from './context.js';

export function newMasterKey(): { key: string; keyId: string } {
  const key = generateMasterKey();
  return { key, keyId: masterKeyId(parseMasterKey(key, 'the generated key')) };
}

export interface DataKeyStatus {
  id: string;
  scope: string;
  status: string;
  kek_id: string;
  kek_kind: string;
  /**
   * true: opened with the configured key; false: wrapped by another key, or did not open; null: wrapped
   * by the configured key's id but not opened (with a KMS, only some are: a call each).
   */
  matches_key: boolean | null;
  secrets: number;
  created_at: string;
  rewrapped_at: string | null;
}

export interface KeyStatus {
  key_source: string;
  key_origin: string;
  key_id: string | null;
  location: string;
  key_matches_vault: boolean | null;
  /** How many data keys were opened to check them (all of them with a local key). */
  data_keys_opened: number;
  data_keys: DataKeyStatus[];
  secrets: number;
}

/**
 * Why the configured key does not open this vault, in the words the keyring uses (expected key id,
 * got key id) with how many data keys stay shut; null when every data key it tried opened.
 * `key status` exits with it after its report; `doctor` shows it as its key check.
 */
export function keyMismatch(report: KeyStatus): KeyError | null {
  // No key at all is not a mismatch: the caller says that no key is configured (noKeyError).
  if (report.key_source === 'none') return null;
  const shut = report.data_keys.filter((k) => k.matches_key === false);
  if (!shut.length) return null;
  const other = shut.filter((k) => k.kek_id !== report.key_id);
  const refusal = refusals.get(report);
  if (!other.length && refusal) {
    // Every data key that stayed shut is wrapped by the configured key: the key is the right one and
    // its KMS refused to unwrap (access denied, a disabled key), or a wrapped data key is damaged.
    // Its own words say which; "expected key id X, got X" would say neither.
    return new KeyError(
      `${refusal.message.replace(/\.$/, '')}; the key from ${report.key_origin} (key id ${report.key_id}, the one that wrapped them) does not open ${shut.length} of this vault's ${report.data_keys.length} data keys`,
      { hint: refusal.hint, cause: refusal },
    );
  }
  return new KeyError(
    `the master key does not match this vault (expected key id ${(other[0] ?? shut[0])!.kek_id}, got ${report.key_id}): the key from ${report.key_origin} does not open ${shut.length} of this vault's ${report.data_keys.length} data keys`,
    {
      hint: 'Use the key the vault was made with (WRAPPED BY in `credvault key status` names its id), or finish a rotation with `credvault key rotate`.',
    },
  );
}

/**
 * The first error a data key wrapped by the configured key's id failed to open with (the KMS refusing,
 * a damaged wrapped key): what keyMismatch reports then. Kept beside the report, out of its JSON.
 */
const refusals = new WeakMap<KeyStatus, KeyError>();

/** Which key is configured, whether it opens this vault, and what each data key protects. */
export async function keyStatus(ctx: ServiceContext): Promise<KeyStatus> {
  const location = locateKey(ctx.config.env, ctx.config.home);
  let keyring = null;
  let keyProblem: KeyError | null = null;
  try {
    keyring = await ctx.keyring();
  } catch (error) {
    if (!(error instanceof KeyError)) throw error;
    keyProblem = error;
  }
  const [keys, counts] = await Promise.all([dataKeys.listAll(ctx.db), dataKeys.secretCounts(ctx.db)]);
  const source = keyring?.source;
  // Whether each data key opens with the configured key, tried on the wrapped forms just read. A local
  // key tries every one (AES, no I/O). A KMS would take a call per key, 50,000 for a vault of 50,000
  // grants: it opens the vault-wide keys and the first grant key, and the other grant keys under the
  // configured key's id are reported as not checked (null), never as opening.
  let refusal: KeyError | null = null;
  let grantOpened = false;
  let opened = 0;
  const opens = async (key: (typeof keys)[number]): Promise<boolean | null> => {
    if (!source || key.kekId !== source.keyId) return false;
    if (source.kind !== 'local' && key.scope === 'grant') {
      if (grantOpened) return null;
      grantOpened = true;
    }
    opened += 1;
    try {
      (await source.unwrap(key.wrappedKey, { dataKeyId: key.id })).fill(0);
      return true;
    } catch (error) {
      if (!(error instanceof KeyError)) throw error;
      refusal ??= error;
      return false;
    }
  };
  const rows: DataKeyStatus[] = [];
  let allOpen = keys.length > 0 ? true : null;
  for (const key of keys) {
    const matches = await opens(key);
    if (matches === false) allOpen = false;
    rows.push({
      id: key.id,
      scope: key.scope,
      status: key.status,
      kek_id: key.kekId,
      kek_kind: key.kekKind,
      matches_key: matches,
      secrets: counts.get(key.id) ?? 0,
      created_at: key.createdAt.toISOString(),
      rewrapped_at: key.rewrappedAt?.toISOString() ?? null,
    });
  }
  if (keyProblem && location.kind !== 'none') throw keyProblem;
  const report: KeyStatus = {
    key_source: keyring?.source.kind ?? 'none',
    key_origin:
      keyring?.source.origin ?? (location.kind === 'none' ? `none (would be ${location.homeKeyPath})` : ''),
    key_id: keyring?.source.keyId ?? null,
    location: location.kind,
    key_matches_vault: keyring ? allOpen : null,
    data_keys_opened: opened,
    data_keys: rows,
    secrets: [...counts.values()].reduce((a, b) => a + b, 0),
  };
  if (refusal) refusals.set(report, refusal);
  return report;
}
