import { createCipheriv, createDecipheriv, type KeyObject, randomFillSync } from 'node:crypto';

/** AES-256-GCM with a fresh 96-bit nonce per value. Output: nonce (12) | ciphertext | tag (16). */
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;

/**
 * Random 96-bit nonces, drawn from a pool filled by the CSPRNG a few hundred at a time: one
 * randomBytes call per secret costs more than the encryption itself when thousands are sealed in a
 * row (a key rotation). Every nonce is still fresh random bytes, used once.
 */
const NONCE_POOL = Buffer.alloc(NONCE_BYTES * 512);
let poolOffset = NONCE_POOL.length;

function freshNonce(): Buffer {
  if (poolOffset + NONCE_BYTES > NONCE_POOL.length) {
    randomFillSync(NONCE_POOL);
    poolOffset = 0;
  }
  // A view into the pool: the cipher copies it, and seal copies it into its output at once.
  const nonce = NONCE_POOL.subarray(poolOffset, poolOffset + NONCE_BYTES);
  poolOffset += NONCE_BYTES;
  return nonce;
}

/**
 * A key used for many values (the key-encryption key) is best given as a KeyObject: Node then skips
 * copying the raw bytes into a new key object on every call.
 */
type AeadKey = Buffer | KeyObject;

function keyBytes(key: AeadKey): number | undefined {
  return Buffer.isBuffer(key) ? key.length : key.symmetricKeySize;
}

export function seal(key: AeadKey, plaintext: Buffer, aad: Buffer): Buffer {
  if (keyBytes(key) !== KEY_BYTES) throw new RangeError('AES-256-GCM needs a 32-byte key');
  const nonce = freshNonce();
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  cipher.final(); // GCM is a stream mode: final() yields no bytes, it computes the tag.
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Returns null when the ciphertext, the key or the associated data does not authenticate. */
export function open(key: AeadKey, sealed: Buffer, aad: Buffer): Buffer | null {
  if (keyBytes(key) !== KEY_BYTES) throw new RangeError('AES-256-GCM needs a 32-byte key');
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return null;
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const plaintext = decipher.update(body);
  try {
    decipher.final(); // No bytes (GCM is a stream mode): it checks the tag, and throws when it is wrong.
    return plaintext;
  } catch {
    // Unauthenticated, but with only the associated data wrong these are the real bytes: gone at once.
    plaintext.fill(0);
    return null;
  }
}
