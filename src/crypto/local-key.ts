import { createSecretKey, hkdfSync, type KeyObject, randomBytes } from 'node:crypto';
import { KeyError } from '../errors.js';
import { open, seal } from './aead.js';
import type { KeySource, WrapContext } from './key-source.js';

const HKDF_SALT = Buffer.from('credvault', 'utf8');
const KEK_INFO = Buffer.from('credvault/kek/v1', 'utf8');
const KEY_ID_INFO = Buffer.from('credvault/key-id/v1', 'utf8');
const WRAP_PREFIX = 'lk1.';

/**
 * The master key format is exactly what Python's `Fernet.generate_key()` prints: 32 random bytes in
 * URL-safe base64 with padding (44 characters), so keys made for the earlier Python system keep working.
 */
export function generateMasterKey(): string {
  return randomBytes(32).toString('base64url') + '=';
}

const FERNET_KEY = /^[A-Za-z0-9_-]{43}=?$/;

// A vault with secrets opens only with the key it was made with: a new one is for a new vault.
const KEY_HINT =
  'Give the key this vault was made with, whole (44 characters); a new vault takes one from `credvault key generate`.';

/** Parses a master key; `origin` names where it came from so the error can say which input is wrong. */
export function parseMasterKey(text: string, origin: string): Buffer {
  const trimmed = text.trim();
  if (!FERNET_KEY.test(trimmed)) {
    throw new KeyError(
      `the master key from ${origin} is not 32 bytes of URL-safe base64 (the format Fernet.generate_key() prints)`,
      { hint: KEY_HINT },
    );
  }
  const bytes = Buffer.from(trimmed.replace(/=$/, ''), 'base64url');
  if (bytes.length !== 32) {
    throw new KeyError(`the master key from ${origin} does not decode to 32 bytes`, {
      hint: KEY_HINT,
    });
  }
  return bytes;
}

function derive(masterKey: Buffer, info: Buffer, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, HKDF_SALT, info, length));
}

/** The key id: derived from the key with its own HKDF label, so it reveals nothing about the KEK. */
export function masterKeyId(masterKey: Buffer): string {
  return derive(masterKey, KEY_ID_INFO, 8).toString('hex');
}

function wrapAad(context: WrapContext, keyId: string): Buffer {
  return Buffer.from(`credvault/dek/v1\0${context.dataKeyId}\0${keyId}`, 'utf8');
}

export class LocalKeySource implements KeySource {
  readonly kind = 'local' as const;
  readonly origin: string;
  readonly keyId: string;
  readonly #kek: KeyObject;

  constructor(masterKey: Buffer, origin: string) {
    this.origin = origin;
    this.keyId = masterKeyId(masterKey);
    const kek = derive(masterKey, KEK_INFO, 32);
    this.#kek = createSecretKey(kek);
    kek.fill(0);
  }

  static fromText(text: string, origin: string): LocalKeySource {
    return new LocalKeySource(parseMasterKey(text, origin), origin);
  }

  async wrap(dataKey: Buffer, context: WrapContext): Promise<string> {
    return this.wrapSync(dataKey, context);
  }

  async unwrap(wrapped: string, context: WrapContext): Promise<Buffer> {
    return this.unwrapSync(wrapped, context);
  }

  // wrap and unwrap without a promise: a rotation re-wraps tens of thousands of keys in a row, and a
  // promise per key would cost more than the AES.
  wrapSync(dataKey: Buffer, context: WrapContext): string {
    return WRAP_PREFIX + seal(this.#kek, dataKey, wrapAad(context, this.keyId)).toString('base64url');
  }

  unwrapSync(wrapped: string, context: WrapContext): Buffer {
    if (!wrapped.startsWith(WRAP_PREFIX)) {
      throw new KeyError(`data key ${context.dataKeyId} was not wrapped by a local master key`);
    }
    const opened = open(
      this.#kek,
      Buffer.from(wrapped.slice(WRAP_PREFIX.length), 'base64url'),
      wrapAad(context, this.keyId),
    );
    if (!opened) {
      throw new KeyError(
        `data key ${context.dataKeyId} does not open with the master key from ${this.origin}`,
        {
          hint: 'The wrapped data key was altered, or it belongs to another vault.',
        },
      );
    }
    return opened;
  }
}
