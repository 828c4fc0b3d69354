import { createDecipheriv, hkdfSync } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Keyring, type WrappedDataKey } from '../../src/crypto/envelope.js';
import { vaultSecretVariables, withoutVaultSecrets } from '../../src/crypto/key-sources.js';
import {
  generateMasterKey,
  LocalKeySource,
  masterKeyId,
  parseMasterKey,
} from '../../src/crypto/local-key.js';
import { Secret } from '../../src/crypto/secret.js';
import { KeyError } from '../../src/errors.js';

// Printed by Python: `from cryptography.fernet import Fernet; Fernet.generate_key()`.
const PYTHON_FERNET_KEY = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';

function keyringFor(key: string) {
  const stored = new Map<string, WrappedDataKey>();
  const source = LocalKeySource.fromText(key, 'test');
  const keyring = new Keyring(source, async (id) => stored.get(id) ?? null);
  return {
    keyring,
    stored,
    async newDataKey(id = 'dek-1') {
      const { wrapped } = await keyring.createDataKey(id);
      stored.set(id, wrapped);
      return id;
    },
  };
}

describe('exec keeps the keys to the vault from its child', () => {
  it('and the cloud credentials too, when they unwrap the vault: AWS for aws-kms, Google for gcp-kms', () => {
    const base = vaultSecretVariables({});
    expect(base).toEqual(expect.arrayContaining(['CREDENTIAL_MASTER_KEY', 'VAULT_TOKEN', 'DATABASE_URL']));
    expect(base).not.toContain('AWS_SECRET_ACCESS_KEY');
    expect(vaultSecretVariables({ CREDENTIAL_KMS_URI: 'aws-kms://alias/credvault' })).toEqual(
      expect.arrayContaining(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']),
    );
    expect(
      vaultSecretVariables({
        CREDENTIAL_KMS_URI: 'gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k',
      }),
    ).toContain('GOOGLE_APPLICATION_CREDENTIALS');
  });
});

describe('PGPASSWORD and PGPASSFILE are kept from programs credvault starts', () => {
  it('on PostgreSQL whichever way it was chosen: by DATABASE_URL, or by --database-url (the configured URL)', async () => {
    const url = 'postgres://postgres@127.0.0.1:5432/vault';
    expect(vaultSecretVariables({ DATABASE_URL: url })).toEqual(
      expect.arrayContaining(['PGPASSWORD', 'PGPASSFILE']),
    );
    // --database-url: the environment has no DATABASE_URL, the configuration has the URL.
    expect(vaultSecretVariables({}, url)).toEqual(expect.arrayContaining(['PGPASSWORD', 'PGPASSFILE']));
    // The embedded database: a PGPASSWORD is some other program's.
    expect(vaultSecretVariables({}, null)).not.toContain('PGPASSWORD');
    // The browser connect opens: started with neither, given back after.
    const saved = { PGPASSWORD: process.env.PGPASSWORD, DATABASE_URL: process.env.DATABASE_URL };
    delete process.env.DATABASE_URL;
    process.env.PGPASSWORD = 'hunter2';
    try {
      const seen = await withoutVaultSecrets({ databaseUrl: url }, async () => process.env.PGPASSWORD);
      expect(seen).toBeUndefined();
      expect(process.env.PGPASSWORD).toBe('hunter2');
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});

describe('master key', () => {
  it('accepts the key format Python Fernet.generate_key() prints', () => {
    expect(parseMasterKey(PYTHON_FERNET_KEY, 'test')).toHaveLength(32);
  });

  it('generates keys in that same format: 44 characters of URL-safe base64 with padding', () => {
    const key = generateMasterKey();
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}=$/);
    expect(Buffer.from(key, 'base64url')).toHaveLength(32);
    expect(generateMasterKey()).not.toBe(key);
  });

  it.each([
    ['too short', 'abc'],
    ['standard base64 with + and /', 'cw+0x689RpI/jtRR7oE8h+eQsKImvJapLeSbXpwF4e4='],
    ['a hex string', 'a'.repeat(64)],
  ])('rejects %s with exit 6', (_what, key) => {
    const error = (() => {
      try {
        parseMasterKey(key, 'CREDENTIAL_MASTER_KEY');
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(KeyError);
    expect((error as KeyError).exitCode).toBe(6);
    expect((error as KeyError).message).toContain('CREDENTIAL_MASTER_KEY');
    expect((error as KeyError).message).not.toContain(key);
  });

  it('derives a short key id that is stable, differs per key and is not the key', () => {
    const key = parseMasterKey(PYTHON_FERNET_KEY, 'test');
    const id = masterKeyId(key);
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(masterKeyId(key)).toBe(id);
    expect(masterKeyId(parseMasterKey(generateMasterKey(), 'x'))).not.toBe(id);
    expect(key.toString('hex')).not.toContain(id);
  });

  // Known answers: the master key 00 01 … 1f, and a data key ff fe … e0 wrapped by it in 2026. A vault
  // made today must open with every later version; a change to the derivation breaks these.
  const KAT_KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
  const KAT_DEK = Buffer.from(Array.from({ length: 32 }, (_, i) => 255 - i));
  const KAT_DEK_ID = '00000000-0000-4000-8000-000000000001';
  const KAT_WRAPPED = 'lk1.4QC7skaOAmYeXVCjQN9CQjSdkKM3SRmn3tqTKPR2paO_1Qg4Gerh_A85EEAwhYJR0kD716UEVOOw3PIZ';

  it('derives the key-encryption key with HKDF-SHA256 and a fixed label (known answers)', () => {
    const master = parseMasterKey(KAT_KEY, 'test');
    expect(masterKeyId(master)).toBe('67f43fb26f6b479b');
    expect(
      LocalKeySource.fromText(KAT_KEY, 'test').unwrapSync(KAT_WRAPPED, { dataKeyId: KAT_DEK_ID }),
    ).toEqual(KAT_DEK);
    // The same wrapped key, opened without credvault's code: AES-256-GCM under HKDF-SHA256(master key,
    // salt "credvault", info "credvault/kek/v1"), nonce first and tag last, the data key's id and the
    // key id as associated data.
    const open = (kek: Buffer) => {
      const sealed = Buffer.from(KAT_WRAPPED.slice('lk1.'.length), 'base64url');
      const decipher = createDecipheriv('aes-256-gcm', kek, sealed.subarray(0, 12));
      decipher.setAAD(Buffer.from(`credvault/dek/v1\0${KAT_DEK_ID}\0${masterKeyId(master)}`, 'utf8'));
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
    };
    const kek = Buffer.from(hkdfSync('sha256', master, 'credvault', 'credvault/kek/v1', 32));
    expect(open(kek)).toEqual(KAT_DEK);
    // The master key itself is not the key-encryption key, nor is a key derived under another label.
    expect(() => open(master)).toThrow();
    expect(() =>
      open(Buffer.from(hkdfSync('sha256', master, 'credvault', 'credvault/key-id/v1', 32))),
    ).toThrow();
  });
});

describe('a long-running process after a rotation', () => {
  it('reads the configured key again before making a data key the vault would refuse', async () => {
    const before = LocalKeySource.fromText(generateMasterKey(), 'master.key');
    const after = LocalKeySource.fromText(generateMasterKey(), 'master.key');
    let reloads = 0;
    const keyring = new Keyring(
      before,
      async () => null,
      async () => {
        reloads += 1;
        return after;
      },
    );
    await keyring.followRotation(before.keyId);
    await keyring.followRotation(null);
    expect(reloads).toBe(0);
    await keyring.followRotation(after.keyId);
    expect(reloads).toBe(1);
    const { wrapped } = await keyring.createDataKey('dek-1');
    expect(wrapped.kekId).toBe(after.keyId);
  });
});

describe('envelope encryption', () => {
  const slot = { table: 'oauth_app_credentials', column: 'client_secret_enc', rowId: 'row-1' };

  it('round-trips a secret under a data key with a fresh nonce each time', async () => {
    const { keyring, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const a = await keyring.encrypt('hunter2', slot, dek);
    const b = await keyring.encrypt('hunter2', slot, dek);
    expect(a).not.toBe(b);
    expect(a.startsWith(`cv1:${dek}:`)).toBe(true);
    expect(a).not.toContain('hunter2');
    expect((await keyring.decrypt(a, slot)).reveal()).toBe('hunter2');
  });

  it('is AES-256-GCM under the data key, a 96-bit nonce first, the tag last, and the slot and data key as associated data (opened without credvault)', async () => {
    const { keyring, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const key = await keyring.dataKey(dek);
    expect(key).toHaveLength(32);
    const stored = await keyring.encrypt('hunter2', slot, dek);
    const [version, dekId, body] = stored.split(':') as [string, string, string];
    expect([version, dekId]).toEqual(['cv1', dek]);
    const sealed = Buffer.from(body, 'base64url');
    expect(sealed).toHaveLength(12 + 'hunter2'.length + 16);
    const open = (aad: string) => {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
      decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
    };
    const aad = `credvault/secret/v1\0${slot.table}\0${slot.column}\0${slot.rowId}\0${dek}`;
    expect(open(aad).toString('utf8')).toBe('hunter2');
    expect(() => open(aad.replace('row-1', 'row-2'))).toThrow();
    // Every nonce differs, across more values than the nonce pool holds between refills (512).
    const nonces = new Set<string>();
    for (let i = 0; i < 1500; i++) {
      const value = await keyring.encrypt('x', slot, dek);
      nonces.add(Buffer.from(value.split(':')[2]!, 'base64url').subarray(0, 12).toString('hex'));
    }
    expect(nonces.size).toBe(1500);
  });

  it('refuses a ciphertext moved to another row or column', async () => {
    const { keyring, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const stored = await keyring.encrypt('hunter2', slot, dek);
    await expect(keyring.decrypt(stored, { ...slot, rowId: 'row-2' })).rejects.toThrow(/does not decrypt/);
    await expect(keyring.decrypt(stored, { ...slot, column: 'developer_token_enc' })).rejects.toThrow(
      /does not decrypt/,
    );
    await expect(keyring.decrypt(stored, { ...slot, table: 'oauth_tokens_vault' })).rejects.toBeInstanceOf(
      KeyError,
    );
  });

  it('refuses a ciphertext with one bit flipped', async () => {
    const { keyring, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const stored = await keyring.encrypt('hunter2', slot, dek);
    const [version, id, body] = stored.split(':');
    const bytes = Buffer.from(body!, 'base64url');
    bytes[14]! ^= 0x01;
    await expect(keyring.decrypt(`${version}:${id}:${bytes.toString('base64url')}`, slot)).rejects.toThrow(
      /altered or copied/,
    );
  });

  it('names an unknown stored-form version instead of failing obscurely', async () => {
    const { keyring, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const stored = await keyring.encrypt('hunter2', slot, dek);
    await expect(keyring.decrypt(stored.replace(/^cv1:/, 'cv9:'), slot)).rejects.toThrow(
      /stored-form version "cv9", which this credvault does not know/,
    );
  });

  it('reports a wrong master key with both key ids', async () => {
    const right = keyringFor(PYTHON_FERNET_KEY);
    const dek = await right.newDataKey();
    const wrongSource = LocalKeySource.fromText(generateMasterKey(), 'CREDENTIAL_MASTER_KEY');
    const wrong = new Keyring(wrongSource, async (id) => right.stored.get(id) ?? null);
    await expect(wrong.dataKey(dek)).rejects.toThrow(
      `the master key does not match this vault (expected key id ${right.keyring.source.keyId}, got ${wrongSource.keyId})`,
    );
  });

  it('refuses a wrapped data key that was tampered with', async () => {
    const { keyring, stored, newDataKey } = keyringFor(PYTHON_FERNET_KEY);
    const dek = await newDataKey();
    const record = stored.get(dek)!;
    const [prefix, body] = record.wrappedKey.split('.') as [string, string];
    const bytes = Buffer.from(body, 'base64url');
    bytes[20]! ^= 0x80;
    const fresh = new Keyring(keyring.source, async () => ({
      ...record,
      wrappedKey: `${prefix}.${bytes.toString('base64url')}`,
    }));
    await expect(fresh.dataKey(dek)).rejects.toBeInstanceOf(KeyError);
  });
});

describe('Secret', () => {
  it('never shows its value through string conversion, JSON or inspect', () => {
    const s = new Secret('hunter2');
    expect(String(s)).toBe('[redacted]');
    expect(`${s}`).toBe('[redacted]');
    expect(JSON.stringify({ s })).toBe('{"s":"[redacted]"}');
    expect(inspect({ s })).not.toContain('hunter2');
    expect(s.reveal()).toBe('hunter2');
  });
});

describe('the audit hash', () => {
  it('is SHA-256 over the canonical JSON of the fields, whatever the key order of detail', async () => {
    const { rowHash } = await import('../../src/services/audit.js');
    const { createHash } = await import('node:crypto');
    const row = {
      id: 7,
      occurredAt: new Date('2026-11-26T12:00:00.123Z'),
      actor: 'ops "quoted"',
      action: 'token.serve',
      targetType: 'connection',
      targetId: 'abc',
      connectionId: null,
      clientAddress: '127.0.0.1',
      userAgent: null,
      outcome: 'success',
      detail: { z: 1, a: { y: [2, { d: true, c: null }], b: 'x' } },
      prevHash: '0'.repeat(64),
    };
    const expected = createHash('sha256')
      .update(
        '[7,"2026-11-26T12:00:00.123Z","ops \\"quoted\\"","token.serve","connection","abc",null,"127.0.0.1",null,"success",{"a":{"b":"x","y":[2,{"c":null,"d":true}]},"z":1},"0000000000000000000000000000000000000000000000000000000000000000"]',
      )
      .digest('hex');
    expect(rowHash(row)).toBe(expected);
    expect(rowHash({ ...row, detail: { a: { b: 'x', y: [2, { c: null, d: true }] }, z: 1 } })).toBe(expected);
    expect(rowHash({ ...row, actor: 'someone else' })).not.toBe(expected);
  });
});
