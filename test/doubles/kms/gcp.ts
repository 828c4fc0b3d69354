/**
 * Google Cloud KMS double: the v1 REST surface as `@google-cloud/kms` sends it in fallback (HTTP/1.1 REST)
 * mode through google-gax 5:
 *
 *   POST /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K:encrypt?$alt=json%3Benum-encoding=int
 *   POST /v1/projects/P/locations/L/keyRings/R/cryptoKeys/K:decrypt?$alt=json%3Benum-encoding=int
 *   Content-Type: application/json, Authorization: Bearer <token>,
 *   x-goog-request-params: name=projects%2FP%2F…, x-goog-api-client: gax/… gapic/… rest/… grpc-web/…
 *
 * Bodies are proto3 JSON: bytes as base64, the `google.protobuf.Int64Value` CRC32C fields as decimal
 * strings (a number is accepted too). The resource name travels only in the path. With
 * `enum-encoding=int` the response's `protectionLevel` is the number 1 (SOFTWARE), else the string.
 * Errors are `{"error":{"code","message","status"}}`, which google-gax decodes with parseHttpError.
 *
 * Keys are AES-256-GCM secrets in memory, one per CryptoKeyVersion. The ciphertext names the version
 * that made it; the additional authenticated data is bound as GCM associated data, so decrypting with
 * another key or another AAD fails as the real service does.
 */
import { randomBytes } from 'node:crypto';
import {
  DROP,
  decodeBase64Lenient,
  jsonReply,
  type KmsHttpRequest,
  type KmsReply,
  newKeySecret,
  open,
  parseJsonObject,
  seal,
  startKmsServer,
} from './common.js';

export type GcpKmsOperation = 'encrypt' | 'decrypt';

export const GCP_PERMISSIONS: Record<GcpKmsOperation, string> = {
  encrypt: 'cloudkms.cryptoKeyVersions.useToEncrypt',
  decrypt: 'cloudkms.cryptoKeyVersions.useToDecrypt',
};

/** The statuses Google's API guidance says to retry, with HTTP codes and words as Cloud KMS sends them. */
export const GCP_TRANSIENT_FAULTS = {
  UNAVAILABLE: { code: 503, message: 'The service is currently unavailable.' },
  DEADLINE_EXCEEDED: { code: 504, message: 'Deadline exceeded.' },
  RESOURCE_EXHAUSTED: {
    code: 429,
    message:
      "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.",
  },
  INTERNAL: { code: 500, message: 'Internal error encountered.' },
} as const;

export function gcpFault(status: keyof typeof GCP_TRANSIENT_FAULTS): {
  code: number;
  status: string;
  message: string;
} {
  return { status, ...GCP_TRANSIENT_FAULTS[status] };
}

export type GcpCorruptibleField =
  | 'ciphertext'
  | 'ciphertextCrc32c'
  | 'verifiedPlaintextCrc32c'
  | 'verifiedAdditionalAuthenticatedDataCrc32c'
  | 'name'
  | 'plaintext'
  | 'plaintextCrc32c';

export interface GcpKmsRecordedRequest extends KmsHttpRequest {
  at: number;
  /** The verb after ':' in the path (`encrypt`, `decrypt`, …); null when the path had none. */
  operation: string | null;
  /** The resource name from the path, percent-decoded (`projects/…/cryptoKeys/K`). */
  name: string | null;
  json: Record<string, unknown> | null;
}

export interface GcpKmsDoubleOptions {
  /** The OAuth access token the double accepts (random `ya29.`… by default). */
  token?: string;
}

export interface GcpKmsDouble {
  url: string;
  port: number;
  /** The bearer token the double accepts. */
  token: string;
  down: boolean;
  /**
   * While set, every authenticated request answers this error (see GCP_TRANSIENT_FAULTS for the
   * statuses Google says to retry: UNAVAILABLE 503, DEADLINE_EXCEEDED 504, RESOURCE_EXHAUSTED 429,
   * INTERNAL 500).
   */
  fault: { code: number; status: string; message: string } | null;
  /**
   * While set, successful answers to `operation` arrive damaged (as by a faulty path between client and
   * service), `times` times (default: every one): `field` names what is damaged — a bit flipped in
   * `ciphertext` or `plaintext` (their checksum left as computed), `ciphertextCrc32c` or
   * `plaintextCrc32c` off by one, a `verified…` flag missing, or `name` naming another key's version.
   */
  corrupt: { operation: GcpKmsOperation; field: GcpCorruptibleField; times?: number } | null;
  requests: GcpKmsRecordedRequest[];
  close(): Promise<void>;
  /** `projects/P/locations/L/keyRings/R/cryptoKeys/K`; creates version 1 as primary. */
  createKey(name: string): { name: string; primaryVersion: string };
  /** New primary version; returns its name. Old ciphertexts still decrypt (`usedPrimary` false). */
  rotate(name: string): string;
  /** The caller lacks the permission for these operations (default both) on this key: 403. */
  deny(name: string, operations?: readonly GcpKmsOperation[]): void;
  allow(name: string, operations?: readonly GcpKmsOperation[]): void;
  /** Accepts one more bearer token. */
  addToken(token: string): void;
  /**
   * An external account (workload identity federation) credentials file, as
   * GOOGLE_APPLICATION_CREDENTIALS names one: its subject token is read from `subjectTokenFile`, and
   * exchanged at the double's Security Token Service (`POST /v1/token`, RFC 8693 as sts.googleapis.com
   * takes it) for an access token the double then accepts. Returns the file's JSON and the subject
   * token to write to `subjectTokenFile`.
   */
  externalAccount(subjectTokenFile: string): { json: Record<string, unknown>; subjectToken: string };
  /** What the Security Token Service exchanged, in order. */
  exchanged: Array<{ subjectToken: string; accessToken: string }>;
}

interface GcpKey {
  name: string;
  versions: Buffer[];
  primary: number;
}

const KEY_NAME_RE = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;
const VERSION_NAME_RE =
  /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+)\/cryptoKeyVersions\/([^/]+)$/;
const CIPHERTEXT_FORMAT = 0x01;
const MAX_DATA_BYTES = 65536;

/**
 * CRC32C (Castagnoli), the checksum Cloud KMS uses for its *Crc32c fields, bit by bit: not
 * credvault's table-driven code, so that the two agreeing checks something.
 */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

class GcpError extends Error {
  constructor(
    readonly code: number,
    readonly status: string,
    message: string,
    readonly details?: unknown[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function errorReply(err: GcpError): KmsReply {
  const error: Record<string, unknown> = { code: err.code, message: err.message, status: err.status };
  if (err.details) error['details'] = err.details;
  return jsonReply(err.code, { error }, { vary: 'Origin, X-Origin, Referer', ...err.headers });
}

function invalid(message: string): GcpError {
  return new GcpError(400, 'INVALID_ARGUMENT', message);
}

const UNAUTHENTICATED_HELP =
  'Expected OAuth 2 access token, login cookie or other valid authentication credential. ' +
  'See https://developers.google.com/identity/sign-in/web/devconsole-project.';

/** Reads a `bytes` field. Absent → empty (proto3 default). */
function bytesField(body: Record<string, unknown>, camel: string, snake: string): Buffer {
  const raw = body[camel] ?? body[snake];
  if (raw === undefined || raw === null) return Buffer.alloc(0);
  const bytes = decodeBase64Lenient(raw);
  if (!bytes) {
    throw invalid(`Invalid value at '${snake}' (TYPE_BYTES), Base64 decoding failed for "${String(raw)}"`);
  }
  return bytes;
}

/** Reads an Int64Value wrapper field: a decimal string (proto3 JSON) or a number. Null when absent. */
function int64Field(body: Record<string, unknown>, camel: string, snake: string): bigint | null {
  const raw = body[camel] ?? body[snake];
  if (raw === undefined || raw === null) return null;
  if (
    (typeof raw === 'string' && /^-?\d+$/.test(raw)) ||
    (typeof raw === 'number' && Number.isInteger(raw))
  ) {
    return BigInt(raw);
  }
  throw invalid(`Invalid value at '${snake}' (TYPE_INT64), "${String(raw)}"`);
}

function checkKnownFields(body: Record<string, unknown>, known: string[]): void {
  for (const field of Object.keys(body)) {
    if (!known.includes(field)) {
      throw invalid(`Invalid JSON payload received. Unknown name "${field}": Cannot find field.`);
    }
  }
}

function toSnake(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The request fields in both spellings: proto3 JSON parsers accept lowerCamelCase and the proto name. */
function fieldNames(...camel: string[]): string[] {
  return [...camel, ...camel.map(toSnake)];
}

function verifyChecksum(data: Buffer, given: bigint | null, dataField: string, crcField: string): boolean {
  if (given === null) return false;
  if (BigInt(crc32c(data)) !== given) {
    throw invalid(`The checksum in field ${crcField} did not match the data in field ${dataField}.`);
  }
  return true;
}

function decryptionFailed(): GcpError {
  return invalid("Decryption failed: verify that 'name' refers to the correct CryptoKey.");
}

export async function startGcpKmsDouble(options: GcpKmsDoubleOptions = {}): Promise<GcpKmsDouble> {
  const token = options.token ?? `ya29.${randomBytes(48).toString('base64url')}`;
  const tokens = new Set([token]);
  const keys = new Map<string, GcpKey>();
  const denied = new Map<string, Set<GcpKmsOperation>>();
  const requests: GcpKmsRecordedRequest[] = [];
  const subjectTokens = new Set<string>();
  const exchanged: Array<{ subjectToken: string; accessToken: string }> = [];
  const AUDIENCE = '//iam.googleapis.com/locations/global/workforcePools/credvault-test/providers/double';

  /** sts.googleapis.com's token exchange, as google-auth-library's StsCredentials sends it. */
  function exchangeToken(req: KmsHttpRequest): KmsReply {
    const form = new URLSearchParams(req.body);
    const oauthError = (error: string, description: string) =>
      jsonReply(400, { error, error_description: description });
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:token-exchange') {
      return oauthError('unsupported_grant_type', `Unsupported grant type: ${form.get('grant_type')}`);
    }
    if (form.get('audience') !== AUDIENCE)
      return oauthError('invalid_target', 'The target audience is invalid.');
    if (!subjectTokens.has(form.get('subject_token') ?? '')) {
      return oauthError('invalid_grant', 'The subject token is invalid.');
    }
    const issued = `ya29.sts.${randomBytes(24).toString('base64url')}`;
    tokens.add(issued);
    exchanged.push({ subjectToken: form.get('subject_token')!, accessToken: issued });
    return jsonReply(200, {
      access_token: issued,
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: 3600,
    });
  }

  function authenticate(req: KmsHttpRequest): void {
    const header = req.headers['authorization'];
    const challenge = { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' };
    if (!header) {
      throw new GcpError(
        401,
        'UNAUTHENTICATED',
        `Request is missing required authentication credential. ${UNAUTHENTICATED_HELP}`,
        undefined,
        challenge,
      );
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match || !tokens.has(match[1]!)) {
      throw new GcpError(
        401,
        'UNAUTHENTICATED',
        `Request had invalid authentication credentials. ${UNAUTHENTICATED_HELP}`,
        undefined,
        challenge,
      );
    }
  }

  function checkPermission(keyName: string, resource: string, operation: GcpKmsOperation): void {
    if (!denied.get(keyName)?.has(operation)) return;
    const permission = GCP_PERMISSIONS[operation];
    throw new GcpError(
      403,
      'PERMISSION_DENIED',
      `Permission '${permission}' denied on resource '${resource}' (or it may not exist).`,
      [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'IAM_PERMISSION_DENIED',
          domain: 'cloudkms.googleapis.com',
          metadata: { permission, resource },
        },
      ],
    );
  }

  function requireKey(keyName: string): GcpKey {
    const key = keys.get(keyName);
    if (!key) throw new GcpError(404, 'NOT_FOUND', `CryptoKey ${keyName} not found.`);
    return key;
  }

  function versionName(key: GcpKey, version: number): string {
    return `${key.name}/cryptoKeyVersions/${version}`;
  }

  function header(version: number): Buffer {
    const out = Buffer.alloc(5);
    out[0] = CIPHERTEXT_FORMAT;
    out.writeUInt32BE(version, 1);
    return out;
  }

  function encrypt(name: string, body: Record<string, unknown>, intEnums: boolean): KmsReply {
    checkKnownFields(
      body,
      fieldNames(
        'name',
        'plaintext',
        'additionalAuthenticatedData',
        'plaintextCrc32c',
        'additionalAuthenticatedDataCrc32c',
      ),
    );
    const versionMatch = VERSION_NAME_RE.exec(name);
    const keyName = versionMatch ? versionMatch[1]! : name;
    if (!KEY_NAME_RE.test(keyName)) throw invalid(`Resource name [${name}] does not match any known type.`);
    checkPermission(keyName, name, 'encrypt');
    const key = requireKey(keyName);
    let version = key.primary;
    if (versionMatch) {
      version = Number(versionMatch[2]);
      if (!Number.isInteger(version) || version < 1 || version > key.versions.length) {
        throw new GcpError(404, 'NOT_FOUND', `CryptoKeyVersion ${name} not found.`);
      }
    }
    const plaintext = bytesField(body, 'plaintext', 'plaintext');
    const aad = bytesField(body, 'additionalAuthenticatedData', 'additional_authenticated_data');
    if (plaintext.length === 0) throw invalid('The request is missing the required field plaintext.');
    if (plaintext.length > MAX_DATA_BYTES) {
      throw invalid(`The plaintext is larger than the maximum of ${MAX_DATA_BYTES} bytes.`);
    }
    if (aad.length > MAX_DATA_BYTES) {
      throw invalid(
        `The additional_authenticated_data is larger than the maximum of ${MAX_DATA_BYTES} bytes.`,
      );
    }
    const verifiedPlaintext = verifyChecksum(
      plaintext,
      int64Field(body, 'plaintextCrc32c', 'plaintext_crc32c'),
      'plaintext',
      'plaintext_crc32c',
    );
    const verifiedAad = verifyChecksum(
      aad,
      int64Field(body, 'additionalAuthenticatedDataCrc32c', 'additional_authenticated_data_crc32c'),
      'additional_authenticated_data',
      'additional_authenticated_data_crc32c',
    );
    const head = header(version);
    const ciphertext = Buffer.concat([
      head,
      seal(key.versions[version - 1]!, plaintext, Buffer.concat([head, aad])),
    ]);
    const response: Record<string, unknown> = {
      name: versionName(key, version),
      ciphertext: ciphertext.toString('base64'),
      ciphertextCrc32c: String(crc32c(ciphertext)),
    };
    // proto3 JSON leaves out fields at their default value: false booleans are absent.
    if (verifiedPlaintext) response['verifiedPlaintextCrc32c'] = true;
    if (verifiedAad) response['verifiedAdditionalAuthenticatedDataCrc32c'] = true;
    response['protectionLevel'] = intEnums ? 1 : 'SOFTWARE';
    damage('encrypt', response);
    return jsonReply(200, response);
  }

  function decrypt(name: string, body: Record<string, unknown>, intEnums: boolean): KmsReply {
    checkKnownFields(
      body,
      fieldNames(
        'name',
        'ciphertext',
        'additionalAuthenticatedData',
        'ciphertextCrc32c',
        'additionalAuthenticatedDataCrc32c',
      ),
    );
    if (!KEY_NAME_RE.test(name)) throw invalid(`Resource name [${name}] does not match any known type.`);
    checkPermission(name, name, 'decrypt');
    const key = requireKey(name);
    const ciphertext = bytesField(body, 'ciphertext', 'ciphertext');
    const aad = bytesField(body, 'additionalAuthenticatedData', 'additional_authenticated_data');
    if (ciphertext.length === 0) throw invalid('The request is missing the required field ciphertext.');
    verifyChecksum(
      ciphertext,
      int64Field(body, 'ciphertextCrc32c', 'ciphertext_crc32c'),
      'ciphertext',
      'ciphertext_crc32c',
    );
    verifyChecksum(
      aad,
      int64Field(body, 'additionalAuthenticatedDataCrc32c', 'additional_authenticated_data_crc32c'),
      'additional_authenticated_data',
      'additional_authenticated_data_crc32c',
    );
    if (ciphertext.length < 5 || ciphertext[0] !== CIPHERTEXT_FORMAT) throw decryptionFailed();
    const version = ciphertext.readUInt32BE(1);
    const secret = key.versions[version - 1];
    const head = ciphertext.subarray(0, 5);
    const plaintext = secret ? open(secret, ciphertext.subarray(5), Buffer.concat([head, aad])) : null;
    if (!plaintext) throw decryptionFailed();
    const response: Record<string, unknown> = {
      plaintext: plaintext.toString('base64'),
      plaintextCrc32c: String(crc32c(plaintext)),
    };
    if (version === key.primary) response['usedPrimary'] = true;
    response['protectionLevel'] = intEnums ? 1 : 'SOFTWARE';
    damage('decrypt', response);
    return jsonReply(200, response);
  }

  /** The `corrupt` fault, applied to an answer about to be sent. */
  function damage(operation: GcpKmsOperation, response: Record<string, unknown>): void {
    const fault = double.corrupt;
    if (!fault || fault.operation !== operation) return;
    if (fault.times !== undefined) {
      if (fault.times <= 0) return;
      fault.times -= 1;
    }
    const field = fault.field;
    if (field === 'ciphertext' || field === 'plaintext') {
      const bytes = Buffer.from(String(response[field]), 'base64');
      bytes[bytes.length - 1]! ^= 0x01;
      response[field] = bytes.toString('base64');
    } else if (field === 'ciphertextCrc32c' || field === 'plaintextCrc32c') {
      response[field] = String((Number(response[field]) + 1) % 2 ** 32);
    } else if (field === 'name') {
      response['name'] = 'projects/elsewhere/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1';
    } else {
      delete response[field];
    }
  }

  function handle(req: KmsHttpRequest, record: GcpKmsRecordedRequest): KmsReply {
    authenticate(req);
    if (double.fault) throw new GcpError(double.fault.code, double.fault.status, double.fault.message);
    if (req.method !== 'POST' || record.name === null || record.operation === null) {
      throw new GcpError(404, 'NOT_FOUND', `Method not found: ${req.method} ${req.path}`);
    }
    if (record.operation !== 'encrypt' && record.operation !== 'decrypt') {
      throw new GcpError(501, 'UNIMPLEMENTED', `The double does not implement :${record.operation}.`);
    }
    const body = record.json;
    if (!body) throw invalid(`Invalid JSON payload received. Unexpected token.\n${req.body.slice(0, 40)}`);
    if (typeof body['name'] === 'string' && body['name'] !== record.name) {
      throw invalid('The name in the request body does not match the name in the URL path.');
    }
    const intEnums = (req.query.get('$alt') ?? '').split(';').includes('enum-encoding=int');
    return record.operation === 'encrypt'
      ? encrypt(record.name, body, intEnums)
      : decrypt(record.name, body, intEnums);
  }

  function controlKey(name: string): GcpKey {
    const key = keys.get(name);
    if (!key) throw new Error(`no such CryptoKey: ${name}`);
    return key;
  }

  const double: GcpKmsDouble = {
    url: '',
    port: 0,
    token,
    down: false,
    fault: null,
    corrupt: null,
    requests,
    close: async () => {},
    createKey(name) {
      if (!KEY_NAME_RE.test(name)) {
        throw new Error(`not a CryptoKey name (projects/P/locations/L/keyRings/R/cryptoKeys/K): ${name}`);
      }
      if (keys.has(name)) throw new Error(`CryptoKey ${name} already exists`);
      const key: GcpKey = { name, versions: [newKeySecret()], primary: 1 };
      keys.set(name, key);
      return { name, primaryVersion: versionName(key, 1) };
    },
    rotate(name) {
      const key = controlKey(name);
      key.versions.push(newKeySecret());
      key.primary = key.versions.length;
      return versionName(key, key.primary);
    },
    deny(name, operations = ['encrypt', 'decrypt']) {
      const set = denied.get(name) ?? new Set<GcpKmsOperation>();
      for (const op of operations) set.add(op);
      denied.set(name, set);
    },
    allow(name, operations = ['encrypt', 'decrypt']) {
      const set = denied.get(name);
      for (const op of operations) set?.delete(op);
    },
    addToken(extra) {
      tokens.add(extra);
    },
    externalAccount(subjectTokenFile) {
      const subjectToken = `subject.${randomBytes(24).toString('base64url')}`;
      subjectTokens.add(subjectToken);
      return {
        subjectToken,
        json: {
          type: 'external_account',
          audience: AUDIENCE,
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          token_url: `${double.url}/v1/token`,
          credential_source: { file: subjectTokenFile },
          workforce_pool_user_project: 'acme-ads',
        },
      };
    },
    exchanged,
  };

  const server = await startKmsServer((req) => {
    let name: string | null = null;
    let operation: string | null = null;
    if (req.path.startsWith('/v1/')) {
      const rest = req.path.slice('/v1/'.length);
      const colon = rest.lastIndexOf(':');
      try {
        name = decodeURIComponent(colon === -1 ? rest : rest.slice(0, colon));
        operation = colon === -1 ? null : decodeURIComponent(rest.slice(colon + 1));
      } catch {
        name = null;
      }
    }
    const record: GcpKmsRecordedRequest = {
      ...req,
      at: Date.now(),
      operation,
      name,
      json: parseJsonObject(req.body),
    };
    requests.push(record);
    if (double.down) return DROP;
    if (req.method === 'POST' && req.path === '/v1/token') return exchangeToken(req);
    try {
      return handle(req, record);
    } catch (err) {
      if (err instanceof GcpError) return errorReply(err);
      throw err;
    }
  });
  double.url = server.url;
  double.port = server.port;
  double.close = server.close;
  return double;
}
