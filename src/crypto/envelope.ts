import { randomBytes } from 'node:crypto';
import { KeyError } from '../errors.js';
import { KEY_BYTES, open, seal } from './aead.js';
import type { KeySource } from './key-source.js';
import { Secret } from './secret.js';

/**
 * Envelope encryption. Every secret is sealed with AES-256-GCM under a data key (DEK); DEKs are kept
 * wrapped by the key source's KEK and unwrapped once per process.
 *
 * Stored form: `cv1:<dek id>:<base64url(nonce | ciphertext | tag)>`. The associated data names the
 * table, column, row id and DEK id, so a ciphertext copied anywhere else does not open.
 */

export const STORED_FORM_VERSION = 'cv1';

/** Where a ciphertext belongs. */
export interface Slot {
  table: string;
  column: string;
  rowId: string;
}

export interface WrappedDataKey {
  id: string;
  wrappedKey: string;
  kekId: string;
  kekKind: string;
}

/** Loads a wrapped data key by id; the store behind it is the caller's business. */
export type DataKeyLoader = (id: string) => Promise<WrappedDataKey | null>;

function aad(slot: Slot, dekId: string): Buffer {
  return Buffer.from(`credvault/secret/v1\0${slot.table}\0${slot.column}\0${slot.rowId}\0${dekId}`, 'utf8');
}

function slotName(slot: Slot): string {
  return `${slot.table}.${slot.column} of row ${slot.rowId}`;
}

export interface ParsedStoredForm {
  version: string;
  dekId: string;
  body: Buffer;
}

export function parseStoredForm(stored: string, slot: Slot): ParsedStoredForm {
  const first = stored.indexOf(':');
  const version = first === -1 ? stored : stored.slice(0, first);
  if (version !== STORED_FORM_VERSION) {
    throw new KeyError(
      `the secret in ${slotName(slot)} is in stored-form version "${version.slice(0, 16)}", which this credvault does not know (it reads "${STORED_FORM_VERSION}")`,
      { hint: 'Upgrade credvault, or check that nothing else writes to this database.' },
    );
  }
  const second = stored.indexOf(':', first + 1);
  if (second === -1)
    throw new KeyError(`the secret in ${slotName(slot)} is not in a stored form credvault reads`);
  return {
    version,
    dekId: stored.slice(first + 1, second),
    body: Buffer.from(stored.slice(second + 1), 'base64url'),
  };
}

export class Keyring {
  #source: KeySource;
  readonly #load: DataKeyLoader;
  readonly #keys = new Map<string, Promise<Buffer>>();
  readonly #reload: (() => Promise<KeySource | null>) | undefined;
  /** When a reload last found no matching key (reloads are throttled after a miss only). */
  #missedAt = 0;
  /** A reload in progress: callers at the same moment wait for it instead of failing. */
  #adopting: Promise<boolean> | null = null;

  /**
   * `reload` re-reads the configured key source: a long-running process (the daemon) whose key was
   * rotated under it (master.key replaced by `key rotate`) picks up the new key when a data key
   * turns out to be wrapped by it, instead of failing until someone sends SIGHUP.
   */
  constructor(source: KeySource, load: DataKeyLoader, reload?: () => Promise<KeySource | null>) {
    this.#source = source;
    this.#load = load;
    this.#reload = reload;
  }

  get source(): KeySource {
    return this.#source;
  }

  /** The configured key again, if it is now the one that wrapped `kekId`. */
  async #adopt(kekId: string): Promise<boolean> {
    if (!this.#reload) return false;
    if (this.#adopting) return (await this.#adopting) && this.#source.keyId === kekId;
    if (Date.now() - this.#missedAt < 1000) return false;
    const reload = this.#reload;
    this.#adopting = (async () => {
      let fresh: KeySource | null = null;
      // A rotation puts the new key in place just after its transaction commits: a data key read in
      // between is wrapped by a key not there yet, so one more look a moment later.
      for (let attempt = 0; attempt < 2 && fresh?.keyId !== kekId; attempt++) {
        if (attempt) await new Promise((resolve) => setTimeout(resolve, 250));
        await fresh?.close?.();
        fresh = await reload().catch(() => null);
      }
      if (!fresh || fresh.keyId !== kekId) {
        await fresh?.close?.();
        this.#missedAt = Date.now();
        return false;
      }
      const previous = this.#source;
      this.#source = fresh;
      await previous.close?.();
      return true;
    })().finally(() => {
      this.#adopting = null;
    });
    return this.#adopting;
  }

  /**
   * Before making a data key: when the vault answers to another key than this process has (a
   * rotation since it started), the configured key is read again, so that a long-running process
   * wraps new keys with the new master key instead of being refused until someone sends SIGHUP.
   */
  async followRotation(vaultKekId: string | null): Promise<void> {
    if (vaultKekId && vaultKekId !== this.#source.keyId) await this.#adopt(vaultKekId);
  }

  /** Makes a new random data key and its wrapped form; the caller stores the wrapped form. */
  async createDataKey(id: string): Promise<{ key: Buffer; wrapped: WrappedDataKey }> {
    let key: Buffer;
    let wrappedKey: string;
    if (this.source.generateDataKey) {
      ({ key, wrapped: wrappedKey } = await this.source.generateDataKey({ dataKeyId: id }));
      if (key.length !== KEY_BYTES)
        throw new KeyError(`${this.source.origin} made a data key of ${key.length} bytes, not ${KEY_BYTES}`);
    } else {
      key = randomBytes(KEY_BYTES);
      wrappedKey = await this.source.wrap(key, { dataKeyId: id });
    }
    this.#keys.set(id, Promise.resolve(key));
    return { key, wrapped: { id, wrappedKey, kekId: this.source.keyId, kekKind: this.source.kind } };
  }

  /** Checks that a wrapped data key belongs to this key source, then opens it. */
  async unwrap(record: WrappedDataKey): Promise<Buffer> {
    if (record.kekId !== this.source.keyId && !(await this.#adopt(record.kekId))) {
      throw new KeyError(
        `the master key does not match this vault (expected key id ${record.kekId}, got ${this.source.keyId})`,
        {
          hint: `The key came from ${this.source.origin}. Use the master key this vault is wrapped with now (key id ${record.kekId}).`,
        },
      );
    }
    return this.source.unwrap(record.wrappedKey, { dataKeyId: record.id });
  }

  /** The data key with this id, unwrapped once per process and cached. */
  dataKey(id: string): Promise<Buffer> {
    let pending = this.#keys.get(id);
    if (!pending) {
      pending = (async () => {
        const record = await this.#load(id);
        if (!record)
          throw new KeyError(`data key ${id} is missing from the vault; the secrets it protected are gone`);
        return this.unwrap(record);
      })();
      this.#keys.set(id, pending);
      pending.catch(() => this.#keys.delete(id));
    }
    return pending;
  }

  /** Whether this data key is unwrapped already. */
  has(id: string): boolean {
    return this.#keys.has(id);
  }

  /** Unwraps several data keys read in one query (the daemon's sweep claims grants by the dozen). */
  prime(records: WrappedDataKey[]): void {
    for (const record of records) {
      if (this.#keys.has(record.id)) continue;
      const pending = this.unwrap(record);
      this.#keys.set(record.id, pending);
      pending.catch(() => this.#keys.delete(record.id));
    }
  }

  /** Forgets a cached data key (after it was destroyed or re-wrapped). */
  forget(id: string): void {
    this.#keys.delete(id);
  }

  async encrypt(plaintext: Secret | string, slot: Slot, dekId: string): Promise<string> {
    const key = await this.dataKey(dekId);
    const value = typeof plaintext === 'string' ? plaintext : plaintext.reveal();
    const sealed = seal(key, Buffer.from(value, 'utf8'), aad(slot, dekId));
    return `${STORED_FORM_VERSION}:${dekId}:${sealed.toString('base64url')}`;
  }

  async decrypt(stored: string, slot: Slot): Promise<Secret> {
    const parsed = parseStoredForm(stored, slot);
    const key = await this.dataKey(parsed.dekId);
    const opened = open(key, parsed.body, aad(slot, parsed.dekId));
    if (!opened) {
      throw new KeyError(
        `the secret in ${slotName(slot)} does not decrypt: it was altered or copied from elsewhere`,
        {
          hint: 'Restore it from a backup, or set the secret again.',
        },
      );
    }
    return new Secret(opened.toString('utf8'));
  }

  async decryptOptional(stored: string | null, slot: Slot): Promise<Secret | null> {
    return stored === null ? null : this.decrypt(stored, slot);
  }

  async close(): Promise<void> {
    for (const pending of this.#keys.values()) {
      pending.then((key) => key.fill(0)).catch(() => {});
    }
    this.#keys.clear();
    await this.source.close?.();
  }
}
