/**
 * HashiCorp Vault Transit secrets engine double (HTTP API v1), one mount (default `transit`):
 *
 *   POST /v1/{mount}/encrypt/{name}              {plaintext, associated_data?, key_version?}
 *   POST /v1/{mount}/decrypt/{name}              {ciphertext, associated_data?}
 *   POST /v1/{mount}/datakey/{plaintext|wrapped}/{name}  {bits?, key_version?}
 *   POST /v1/{mount}/rewrap/{name}               {ciphertext, key_version?}
 *   POST /v1/{mount}/keys/{name}/rotate
 *   POST /v1/{mount}/keys/{name}  (create)       GET /v1/{mount}/keys/{name}  (read)
 *
 * PUT is accepted wherever POST is, as Vault does. Auth: `X-Vault-Token` (or `Authorization: Bearer`).
 * Keys live per namespace (`X-Vault-Namespace`, root when absent); a key in another namespace is an
 * unknown key. Ciphertexts are `vault:v<N>:` + base64(nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)), the
 * aes256-gcm96 layout, under version N's secret with `associated_data` as GCM associated data.
 *
 * As in Vault's source (builtin/logical/transit path_datakey.go, path_rewrap.go), only encrypt and
 * decrypt take `associated_data`: datakey and rewrap do not know the parameter, ignore it with a
 * warning, and work without associated data (so rewrap of a ciphertext made with associated data fails
 * with "cipher: message authentication failed", and a datakey ciphertext decrypts only without it).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  DROP,
  GCM_NONCE_BYTES,
  GCM_TAG_BYTES,
  jsonReply,
  type KmsHttpRequest,
  type KmsReply,
  newKeySecret,
  open,
  parseJsonObject,
  seal,
  startKmsServer,
} from './common.js';

export interface VaultRecordedRequest extends KmsHttpRequest {
  at: number;
  /** X-Vault-Namespace without surrounding slashes ('' for the root namespace). */
  namespace: string;
  /** encrypt, decrypt, datakey, rewrap, rotate, keys (create/read); null for other paths. */
  operation: string | null;
  /** The key name from the path; null for other paths. */
  name: string | null;
  json: Record<string, unknown> | null;
}

export interface VaultTransitDoubleOptions {
  /** The token the double accepts (random `hvs.`… by default). */
  token?: string;
  /** The Transit mount path (default `transit`). */
  mount?: string;
  /**
   * Encrypt to an unknown key creates it, as Vault does for a token with the `create` capability.
   * Default false: "encryption key not found", as with `update`-only policies or `disable_upsert`.
   */
  upsert?: boolean;
}

export interface VaultKeyOptions {
  /** Namespace path, e.g. `team-a` or `admin/team-a` ('' or absent: root). */
  namespace?: string;
}

export interface VaultTransitDouble {
  url: string;
  port: number;
  token: string;
  mount: string;
  /** Every request has its socket destroyed without an answer (Vault unreachable). */
  down: boolean;
  /** Vault goes down (as `down`) at the first request of this operation, e.g. 'decrypt'. */
  downOn: string | null;
  /** Every request answers 503 {"errors":["Vault is sealed"]}. */
  sealed: boolean;
  requests: VaultRecordedRequest[];
  close(): Promise<void>;
  /** An aes256-gcm96 key at version 1. */
  createKey(name: string, options?: VaultKeyOptions): void;
  /** New latest version (returned); old ciphertexts still decrypt. */
  rotate(name: string, options?: VaultKeyOptions): number;
  /** Ciphertexts older than this version answer "…disallowed by policy (too old)". */
  setMinDecryptionVersion(name: string, version: number, options?: VaultKeyOptions): void;
  latestVersion(name: string, options?: VaultKeyOptions): number;
  /** Every path naming this key answers 403 permission denied. */
  deny(name: string, options?: VaultKeyOptions): void;
  allow(name: string, options?: VaultKeyOptions): void;
  addToken(token: string): void;
}

interface VaultKey {
  name: string;
  versions: Buffer[];
  created: number[];
  minDecryptionVersion: number;
}

const NAME_RE = /^\w(?:[\w.@-]*\w)?$/;
const B64_ALPHABET = /^[A-Za-z0-9+/]$/;

/** Known parameters per endpoint (Vault warns about, and ignores, any other). */
const FIELDS: Record<string, string[]> = {
  encrypt: [
    'plaintext',
    'associated_data',
    'context',
    'nonce',
    'key_version',
    'type',
    'convergent_encryption',
    'batch_input',
    'partial_failure_response_code',
    'padding_scheme',
  ],
  decrypt: [
    'ciphertext',
    'associated_data',
    'context',
    'nonce',
    'batch_input',
    'partial_failure_response_code',
    'padding_scheme',
  ],
  datakey: ['context', 'nonce', 'bits', 'key_version', 'padding_scheme'],
  rewrap: [
    'ciphertext',
    'context',
    'nonce',
    'key_version',
    'batch_input',
    'encrypt_padding_scheme',
    'decrypt_padding_scheme',
  ],
  rotate: ['managed_key_name', 'managed_key_id'],
  keys: [
    'type',
    'derived',
    'convergent_encryption',
    'exportable',
    'allow_plaintext_backup',
    'auto_rotate_period',
    'key_size',
    'managed_key_name',
    'managed_key_id',
  ],
};

class VaultError extends Error {
  constructor(
    readonly status: number,
    message: string | null,
  ) {
    super(message ?? '');
    this.errors = message === null ? [] : [message];
  }
  readonly errors: string[];
}

function normalizeNamespace(namespace: string | undefined): string {
  return (namespace ?? '').replace(/^\/+|\/+$/g, '');
}

/** Go's base64.StdEncoding.DecodeString: strict, padded; errors name the offending offset as Go does. */
function goBase64(value: string): Buffer | string {
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '=') {
      const rest = value.slice(i);
      const ok = (rest === '=' || rest === '==') && value.length % 4 === 0;
      if (!ok) return `illegal base64 data at input byte ${i}`;
      break;
    }
    if (!B64_ALPHABET.test(c)) return `illegal base64 data at input byte ${i}`;
  }
  if (value.length % 4 !== 0) return `illegal base64 data at input byte ${Math.floor(value.length / 4) * 4}`;
  return Buffer.from(value, 'base64');
}

function envelope(data: unknown, warnings: string[]): KmsReply {
  return jsonReply(200, {
    request_id: randomUUID(),
    lease_id: '',
    renewable: false,
    lease_duration: 0,
    data,
    wrap_info: null,
    warnings: warnings.length > 0 ? warnings : null,
    auth: null,
    mount_type: 'transit',
  });
}

function intField(body: Record<string, unknown>, field: string, fallback: number): number {
  const raw = body[field];
  if (raw === undefined || raw === null || raw === '') return fallback;
  const value = typeof raw === 'string' && /^-?\d+$/.test(raw) ? Number(raw) : raw;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new VaultError(400, `error converting input ${String(raw)} for field "${field}"`);
  }
  return value;
}

function stringField(body: Record<string, unknown>, field: string): string | undefined {
  const raw = body[field];
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'string') throw new VaultError(400, `error converting input for field "${field}"`);
  return raw;
}

export async function startVaultTransitDouble(
  options: VaultTransitDoubleOptions = {},
): Promise<VaultTransitDouble> {
  const token = options.token ?? `hvs.${randomBytes(18).toString('base64url')}`;
  const tokens = new Set([token]);
  const mount = (options.mount ?? 'transit').replace(/^\/+|\/+$/g, '');
  const upsert = options.upsert ?? false;
  /** namespace → key name → key. */
  const namespaces = new Map<string, Map<string, VaultKey>>();
  const denied = new Set<string>();
  const requests: VaultRecordedRequest[] = [];

  function keysIn(namespace: string): Map<string, VaultKey> {
    let keys = namespaces.get(namespace);
    if (!keys) {
      keys = new Map();
      namespaces.set(namespace, keys);
    }
    return keys;
  }

  function newKey(name: string): VaultKey {
    return { name, versions: [newKeySecret()], created: [Date.now()], minDecryptionVersion: 1 };
  }

  function controlKey(name: string, opts: VaultKeyOptions = {}): VaultKey {
    const key = keysIn(normalizeNamespace(opts.namespace)).get(name);
    if (!key) throw new Error(`no transit key ${name} in namespace '${normalizeNamespace(opts.namespace)}'`);
    return key;
  }

  function encryptWith(key: VaultKey, version: number, plaintext: Buffer, aad: Buffer): string {
    return `vault:v${version}:${seal(key.versions[version - 1]!, plaintext, aad).toString('base64')}`;
  }

  function encryptionVersion(key: VaultKey, requested: number): number {
    if (requested === 0) return key.versions.length;
    if (requested < 0) throw new VaultError(400, 'requested version for encryption is negative');
    if (requested > key.versions.length) {
      throw new VaultError(400, 'requested version for encryption is higher than the latest key version');
    }
    return requested;
  }

  /** keysutil.Policy.DecryptWithFactory, for aes256-gcm96. */
  function decryptWith(key: VaultKey, value: string, aad: Buffer): Buffer {
    if (!value.startsWith('vault:v')) throw new VaultError(400, 'invalid ciphertext: no prefix');
    const rest = value.slice('vault:v'.length);
    const colon = rest.indexOf(':');
    if (colon === -1) throw new VaultError(400, 'invalid ciphertext: wrong number of fields');
    const versionText = rest.slice(0, colon);
    if (!/^[+-]?\d+$/.test(versionText)) {
      throw new VaultError(400, 'invalid ciphertext: version number could not be decoded');
    }
    let version = Number(versionText);
    if (version === 0) version = 1;
    if (version > key.versions.length) throw new VaultError(400, 'invalid ciphertext: version is too new');
    if (version < key.minDecryptionVersion) {
      throw new VaultError(400, 'ciphertext or signature version is disallowed by policy (too old)');
    }
    const decoded = goBase64(rest.slice(colon + 1));
    if (typeof decoded === 'string') throw new VaultError(400, 'invalid ciphertext: could not decode base64');
    if (decoded.length < GCM_NONCE_BYTES + GCM_TAG_BYTES)
      throw new VaultError(400, 'invalid ciphertext length');
    const plaintext = open(key.versions[version - 1]!, decoded, aad);
    if (!plaintext) throw new VaultError(400, 'cipher: message authentication failed');
    return plaintext;
  }

  function associatedData(body: Record<string, unknown>): Buffer {
    const raw = stringField(body, 'associated_data');
    if (raw === undefined || raw === '') return Buffer.alloc(0);
    const decoded = goBase64(raw);
    if (typeof decoded === 'string') {
      throw new VaultError(
        500,
        `1 error occurred:\n\t* unable to get associated_data/additional_data from factory[0]: ${decoded}\n\n`,
      );
    }
    return decoded;
  }

  function keyInfo(key: VaultKey): Record<string, unknown> {
    const versions: Record<string, number> = {};
    key.created.forEach((at, i) => {
      versions[String(i + 1)] = Math.floor(at / 1000);
    });
    return {
      allow_plaintext_backup: false,
      auto_rotate_period: 0,
      deletion_allowed: false,
      derived: false,
      exportable: false,
      imported_key: false,
      keys: versions,
      latest_version: key.versions.length,
      min_available_version: 0,
      min_decryption_version: key.minDecryptionVersion,
      min_encryption_version: 0,
      name: key.name,
      supports_decryption: true,
      supports_derivation: true,
      supports_encryption: true,
      supports_signing: false,
      type: 'aes256-gcm96',
    };
  }

  function route(path: string): { operation: string; name: string; variant?: string } | null {
    const prefix = `/v1/${mount}/`;
    if (!path.startsWith(prefix)) return null;
    let parts: string[];
    try {
      parts = path.slice(prefix.length).split('/').map(decodeURIComponent);
    } catch {
      return null;
    }
    const [op, a, b] = parts;
    if (parts.length === 2 && (op === 'encrypt' || op === 'decrypt' || op === 'rewrap')) {
      return { operation: op, name: a! };
    }
    if (parts.length === 3 && op === 'datakey') return { operation: 'datakey', name: b!, variant: a! };
    if (parts.length === 3 && op === 'keys' && b === 'rotate') return { operation: 'rotate', name: a! };
    if (parts.length === 2 && op === 'keys') return { operation: 'keys', name: a! };
    return null;
  }

  function handle(req: KmsHttpRequest, record: VaultRecordedRequest): KmsReply {
    if (double.sealed) throw new VaultError(503, 'Vault is sealed');
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers['authorization'] ?? '');
    const presented = req.headers['x-vault-token'] ?? bearer?.[1];
    if (!presented || !tokens.has(presented)) throw new VaultError(403, 'permission denied');
    const target = route(req.path);
    const write = req.method === 'POST' || req.method === 'PUT';
    if (
      !target ||
      !NAME_RE.test(target.name) ||
      (!write && !(target.operation === 'keys' && req.method === 'GET'))
    ) {
      throw new VaultError(404, 'unsupported path');
    }
    const namespace = record.namespace;
    if (denied.has(`${namespace}\u0000${target.name}`)) throw new VaultError(403, 'permission denied');
    const body = record.json;
    if (!body) throw new VaultError(400, 'failed to parse JSON input: invalid character');
    const keys = keysIn(namespace);
    const warnings: string[] = [];
    const ignored = Object.keys(body).filter((f) => !FIELDS[target.operation]!.includes(f));
    if (ignored.length > 0 && write) {
      warnings.push(`Endpoint ignored these unrecognized parameters: [${ignored.join(' ')}]`);
    }
    if (body['batch_input'] !== undefined)
      throw new VaultError(400, 'the double does not implement batch_input');

    switch (target.operation) {
      case 'encrypt': {
        const raw = body['plaintext'];
        if (raw === undefined || raw === null) throw new VaultError(400, 'missing plaintext to encrypt');
        if (typeof raw !== 'string')
          throw new VaultError(400, 'error converting input for field "plaintext"');
        const plaintext = goBase64(raw);
        if (typeof plaintext === 'string') throw new VaultError(400, plaintext);
        let key = keys.get(target.name);
        if (!key && upsert) {
          key = newKey(target.name);
          keys.set(target.name, key);
        }
        if (!key) throw new VaultError(400, 'encryption key not found');
        const aad = associatedData(body);
        const version = encryptionVersion(key, intField(body, 'key_version', 0));
        return envelope(
          { ciphertext: encryptWith(key, version, plaintext, aad), key_version: version },
          warnings,
        );
      }
      case 'decrypt': {
        const ciphertext = stringField(body, 'ciphertext');
        if (!ciphertext) throw new VaultError(400, 'missing ciphertext to decrypt');
        const key = keys.get(target.name);
        if (!key) throw new VaultError(400, 'encryption key not found');
        const plaintext = decryptWith(key, ciphertext, associatedData(body));
        return envelope({ plaintext: plaintext.toString('base64') }, warnings);
      }
      case 'datakey': {
        const bits = intField(body, 'bits', 256);
        if (bits !== 128 && bits !== 256 && bits !== 512) throw new VaultError(400, 'invalid bit length');
        if (target.variant !== 'plaintext' && target.variant !== 'wrapped') {
          throw new VaultError(400, "Invalid path, must be 'plaintext' or 'wrapped'");
        }
        const key = keys.get(target.name);
        if (!key) throw new VaultError(400, 'encryption key not found');
        const version = encryptionVersion(key, intField(body, 'key_version', 0));
        const dataKey = randomBytes(bits / 8);
        const data: Record<string, unknown> = {
          ciphertext: encryptWith(key, version, dataKey, Buffer.alloc(0)),
          key_version: version,
        };
        if (target.variant === 'plaintext') data['plaintext'] = dataKey.toString('base64');
        return envelope(data, warnings);
      }
      case 'rewrap': {
        const ciphertext = stringField(body, 'ciphertext');
        if (!ciphertext) throw new VaultError(400, 'missing ciphertext to decrypt');
        const key = keys.get(target.name);
        if (!key) throw new VaultError(400, 'encryption key not found');
        const plaintext = decryptWith(key, ciphertext, Buffer.alloc(0));
        const version = encryptionVersion(key, intField(body, 'key_version', 0));
        return envelope(
          { ciphertext: encryptWith(key, version, plaintext, Buffer.alloc(0)), key_version: version },
          warnings,
        );
      }
      case 'rotate': {
        const key = keys.get(target.name);
        if (!key) throw new VaultError(400, 'encryption key not found');
        key.versions.push(newKeySecret());
        key.created.push(Date.now());
        return envelope(keyInfo(key), warnings);
      }
      default: {
        // keys/{name}: GET reads, POST/PUT creates (idempotent, like Vault).
        if (req.method === 'GET') {
          const key = keys.get(target.name);
          if (!key) throw new VaultError(404, null);
          return envelope(keyInfo(key), []);
        }
        const type = stringField(body, 'type') ?? 'aes256-gcm96';
        if (type !== 'aes256-gcm96')
          throw new VaultError(400, `the double only implements aes256-gcm96, not ${type}`);
        let key = keys.get(target.name);
        if (!key) {
          key = newKey(target.name);
          keys.set(target.name, key);
        }
        return envelope(keyInfo(key), warnings);
      }
    }
  }

  const double: VaultTransitDouble = {
    url: '',
    port: 0,
    token,
    mount,
    down: false,
    downOn: null,
    sealed: false,
    requests,
    close: async () => {},
    createKey(name, opts = {}) {
      if (!NAME_RE.test(name)) throw new Error(`invalid transit key name: ${name}`);
      const keys = keysIn(normalizeNamespace(opts.namespace));
      if (keys.has(name)) throw new Error(`transit key ${name} already exists`);
      keys.set(name, newKey(name));
    },
    rotate(name, opts) {
      const key = controlKey(name, opts);
      key.versions.push(newKeySecret());
      key.created.push(Date.now());
      return key.versions.length;
    },
    setMinDecryptionVersion(name, version, opts) {
      const key = controlKey(name, opts);
      if (version < 1 || version > key.versions.length) throw new Error(`no version ${version} of ${name}`);
      key.minDecryptionVersion = version;
    },
    latestVersion(name, opts) {
      return controlKey(name, opts).versions.length;
    },
    deny(name, opts = {}) {
      denied.add(`${normalizeNamespace(opts.namespace)}\u0000${name}`);
    },
    allow(name, opts = {}) {
      denied.delete(`${normalizeNamespace(opts.namespace)}\u0000${name}`);
    },
    addToken(extra) {
      tokens.add(extra);
    },
  };

  const server = await startKmsServer((req) => {
    const target = route(req.path);
    const record: VaultRecordedRequest = {
      ...req,
      at: Date.now(),
      namespace: normalizeNamespace(req.headers['x-vault-namespace']),
      operation: target?.operation ?? null,
      name: target?.name ?? null,
      json: parseJsonObject(req.body),
    };
    requests.push(record);
    if (double.downOn !== null && record.operation === double.downOn) double.down = true;
    if (double.down) return DROP;
    try {
      return handle(req, record);
    } catch (err) {
      if (err instanceof VaultError) return jsonReply(err.status, { errors: err.errors });
      throw err;
    }
  });
  double.url = server.url;
  double.port = server.port;
  double.close = server.close;
  return double;
}
