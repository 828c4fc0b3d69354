/**
 * AWS KMS double: the JSON 1.1 protocol `@aws-sdk/client-kms` speaks (`POST /`, `X-Amz-Target:
 * TrentService.<Operation>`, `Content-Type: application/x-amz-json-1.1`, blobs as base64 strings).
 *
 * Keys are AES-256-GCM secrets held in memory. A ciphertext blob names the key ARN and key-material
 * version that made it (so Decrypt works without KeyId, as in real KMS) and binds the encryption
 * context as associated data: only the same key with the same context opens it.
 *
 * Authentication, as KMS answers it (its JSON protocol names the errors of the IAM troubleshooting
 * guide's "signed requests" page, with HTTP 400):
 * - the Authorization header's shape (algorithm, Credential scope, SignedHeaders, Signature) and
 *   X-Amz-Date: IncompleteSignatureException, or InvalidSignatureException for a scope naming another
 *   date, service or terminator;
 * - an access key id the double does not know, a temporary one (ASIA…) without its X-Amz-Security-Token
 *   or with another, or a long-term one with a token: UnrecognizedClientException, "The security token
 *   included in the request is invalid.";
 * - X-Amz-Date more than 5 minutes from the double's clock: InvalidSignatureException "Signature
 *   expired: … is now earlier than … (… - 5 min.)" or "Signature not yet current: … is still later
 *   than … (… + 5 min.)";
 * - the signature itself, recomputed with the access key's secret over the signed headers by
 *   @smithy/signature-v4 (the SDK's own signer; a bug in both would go unseen, a wrong secret, token,
 *   region or date would not): InvalidSignatureException, "The request signature we calculated does
 *   not match the signature you provided. …".
 * The region of the request is the region of its credential scope; key ids and aliases resolve in it.
 */
import { createHash, createHmac, type Hash, type Hmac, randomBytes, randomUUID } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import {
  DROP,
  decodeBase64Strict,
  type KmsHttpRequest,
  type KmsReply,
  newKeySecret,
  open,
  parseJsonObject,
  seal,
  startKmsServer,
} from './common.js';

export type AwsKmsOperation =
  | 'Encrypt'
  | 'Decrypt'
  | 'GenerateDataKey'
  | 'GenerateDataKeyWithoutPlaintext'
  | 'DescribeKey';

export const AWS_KMS_OPERATIONS: readonly AwsKmsOperation[] = [
  'Encrypt',
  'Decrypt',
  'GenerateDataKey',
  'GenerateDataKeyWithoutPlaintext',
  'DescribeKey',
];

/**
 * The errors AWS documents as transient for Encrypt, Decrypt and GenerateDataKey, with their HTTP
 * status; the messages are ThrottlingException's as KMS sends it and the others' API reference text.
 */
export const AWS_TRANSIENT_FAULTS = {
  ThrottlingException: {
    status: 400,
    message: 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.',
  },
  KMSInternalException: {
    status: 500,
    message: 'The request was rejected because an internal exception occurred. The request can be retried.',
  },
  DependencyTimeoutException: {
    status: 503,
    message: 'The system timed out while trying to fulfill the request. You can retry the request.',
  },
  KeyUnavailableException: {
    status: 500,
    message:
      'The request was rejected because the specified KMS key was not available. You can retry the request.',
  },
} as const;

export function awsFault(type: keyof typeof AWS_TRANSIENT_FAULTS): {
  type: string;
  status: number;
  message: string;
} {
  return { type, ...AWS_TRANSIENT_FAULTS[type] };
}

export type AwsKeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export interface AwsKmsRecordedRequest extends KmsHttpRequest {
  /** Date.now() when the request was complete. */
  at: number;
  /** From X-Amz-Target (`TrentService.Encrypt` → `Encrypt`); null when absent or foreign. */
  operation: string | null;
  /** The KeyId the request sent, as sent (null when none). */
  keyId: string | null;
  /** The key the double resolved (from KeyId or from the ciphertext blob); null when none was. */
  keyArn: string | null;
  /** The parsed JSON body (null when it did not parse). */
  json: Record<string, unknown> | null;
}

export interface AwsKmsDoubleOptions {
  /** Default region for createKey and the ARNs (default us-east-1). */
  region?: string;
  /** Default account (12 digits) for createKey and the caller (default 111122223333). */
  account?: string;
  /** Test credentials the double accepts (random AKIA… / 40-char secret by default). */
  accessKeyId?: string;
  secretAccessKey?: string;
}

export interface AwsTestCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** For temporary (ASIA…) keys only. */
  sessionToken?: string;
}

export interface AwsCreatedKey {
  keyId: string;
  arn: string;
}

export interface AwsKmsDouble {
  url: string;
  port: number;
  region: string;
  account: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** When true every request has its socket destroyed without an answer (service unreachable). */
  down: boolean;
  /**
   * While set, every signed request answers this error, as KMS does when it throttles
   * (`ThrottlingException`, 400), fails inside (`KMSInternalException`, 500), times out on a
   * dependency (`DependencyTimeoutException`, 503) or cannot reach a custom key store
   * (`KeyUnavailableException`, 500). Use awsFault() for those, with KMS's own words.
   */
  fault: { type: string; status: number; message: string } | null;
  requests: AwsKmsRecordedRequest[];
  close(): Promise<void>;
  /** alias: `alias/NAME` or `NAME`. region/account default to the double's. */
  createKey(options?: {
    alias?: string;
    region?: string;
    account?: string;
    description?: string;
  }): AwsCreatedKey;
  /** Another alias for an existing key. */
  createAlias(alias: string, keyIdOrArn: string): void;
  /** The listed operations (default: all) answer AccessDeniedException for this key. */
  deny(keyIdOrAlias: string, operations?: readonly AwsKmsOperation[]): void;
  /** Undoes deny for the listed operations (default: all). */
  allow(keyIdOrAlias: string, operations?: readonly AwsKmsOperation[]): void;
  /** Cryptographic operations answer DisabledException; DescribeKey shows KeyState Disabled. */
  disable(keyIdOrAlias: string): void;
  enable(keyIdOrAlias: string): void;
  /** Cryptographic operations answer KMSInvalidStateException; KeyState PendingDeletion. */
  scheduleDeletion(keyIdOrAlias: string): void;
  /** New key material (on-demand rotation): new ciphertexts use it, old ones still decrypt. */
  rotate(keyIdOrAlias: string): void;
  /**
   * Accepts one more access key, with its secret (random by default). A temporary key (ASIA…) has a
   * session token too (random by default) that every request must carry as X-Amz-Security-Token.
   */
  addAccessKey(
    accessKeyId: string,
    options?: { secretAccessKey?: string; sessionToken?: string },
  ): AwsTestCredentials;
  /** Added to the double's clock (its 5-minute window and its Date header): a client clock that is off. */
  clockSkewMs: number;
  /** The key's state as DescribeKey would show it. */
  keyState(keyIdOrAlias: string): AwsKeyState;
}

interface AwsKey {
  keyId: string;
  arn: string;
  region: string;
  account: string;
  description: string;
  created: number;
  state: AwsKeyState;
  /** Key material versions; index = version number - 1. The newest encrypts. */
  materials: Buffer[];
  denied: Set<string>;
}

const JSON_11 = 'application/x-amz-json-1.1';
const BLOB_MAGIC = Buffer.from([0x01, 0x02, 0x02, 0x00]);
const ARN_RE = /^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):(key|alias)\/(.+)$/;
const UUID_RE = /^(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const AMZ_DATE_RE = /^(\d{8})T(\d{2})(\d{2})(\d{2})Z$/;
/** How far X-Amz-Date may be from the service's clock, either way. */
const SIGNATURE_WINDOW_MS = 5 * 60_000;

/** node:crypto as the Hash interface @smithy/signature-v4 takes (HMAC when given a key). */
type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytes(data: SourceData): string | Uint8Array {
  if (typeof data === 'string') return data;
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
}

class NodeSha256 {
  readonly #hash: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.#hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.#hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.#hash.digest());
  }
}

function amzDateOf(ms: number): string {
  return `${new Date(ms).toISOString().replace(/[-:]/g, '').slice(0, 15)}Z`;
}

/** An error answer. `detail` null: the body has no message (real KMS sends none for some errors). */
class AwsError extends Error {
  constructor(
    readonly type: string,
    readonly detail: string | null,
    readonly status = 400,
  ) {
    super(detail ?? type);
  }
}

function errorReply(err: AwsError): KmsReply {
  const body: Record<string, string> = { __type: err.type };
  if (err.detail !== null) body['message'] = err.detail;
  return awsReply(err.status, body);
}

function awsReply(status: number, body: unknown): KmsReply {
  return {
    status,
    headers: { 'content-type': JSON_11, 'x-amzn-requestid': randomUUID() },
    body: JSON.stringify(body),
  };
}

function randomAccessKeyId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let id = 'AKIA';
  for (const byte of randomBytes(16)) id += alphabet[byte % alphabet.length];
  return id;
}

function normalizeAlias(alias: string): string {
  return alias.startsWith('alias/') ? alias : `alias/${alias}`;
}

function validation(message: string): AwsError {
  return new AwsError('ValidationException', `1 validation error detected: ${message}`);
}

function requireString(body: Record<string, unknown>, field: string, member: string): string {
  const value = body[field];
  if (value === undefined || value === null) {
    throw validation(`Value null at '${member}' failed to satisfy constraint: Member must not be null`);
  }
  if (typeof value !== 'string') {
    throw new AwsError('SerializationException', `Unexpected value type for '${field}'`);
  }
  return value;
}

function blobField(body: Record<string, unknown>, field: string, member: string, max: number): Buffer {
  const raw = body[field];
  if (raw === undefined || raw === null) {
    throw validation(`Value null at '${member}' failed to satisfy constraint: Member must not be null`);
  }
  const bytes = decodeBase64Strict(raw);
  if (!bytes) throw new AwsError('SerializationException', `Base64 decoding failed for '${field}'`);
  if (bytes.length < 1) {
    throw validation(
      `Value at '${member}' failed to satisfy constraint: Member must have length greater than or equal to 1`,
    );
  }
  if (bytes.length > max) {
    throw validation(
      `Value at '${member}' failed to satisfy constraint: Member must have length less than or equal to ${max}`,
    );
  }
  return bytes;
}

function encryptionContext(body: Record<string, unknown>): Record<string, string> {
  const raw = body['EncryptionContext'];
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new AwsError('SerializationException', "Unexpected value type for 'EncryptionContext'");
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      throw new AwsError('SerializationException', "Unexpected value type in 'EncryptionContext'");
    }
    out[k] = v;
  }
  return out;
}

/** Order-independent: KMS treats the encryption context as an unordered map. */
function canonicalContext(context: Record<string, string>): Buffer {
  const entries = Object.keys(context)
    .sort()
    .map((k) => [k, context[k]]);
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

function checkAlgorithm(body: Record<string, unknown>): void {
  const algorithm = body['EncryptionAlgorithm'];
  if (algorithm === undefined || algorithm === null || algorithm === 'SYMMETRIC_DEFAULT') return;
  if (typeof algorithm === 'string' && algorithm.startsWith('RSAES_')) {
    throw new AwsError(
      'InvalidKeyUsageException',
      `The encryption algorithm ${algorithm} is not compatible with the type of key spec that was used.`,
    );
  }
  throw validation(
    `Value '${String(algorithm)}' at 'encryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]`,
  );
}

export async function startAwsKmsDouble(options: AwsKmsDoubleOptions = {}): Promise<AwsKmsDouble> {
  const defaultRegion = options.region ?? 'us-east-1';
  const defaultAccount = options.account ?? '111122223333';
  const accessKeyId = options.accessKeyId ?? randomAccessKeyId();
  const secretAccessKey = options.secretAccessKey ?? randomBytes(30).toString('base64');
  /** Access key id → its secret, and its session token for a temporary key. */
  const accessKeys = new Map<string, { secretAccessKey: string; sessionToken: string | null }>([
    [accessKeyId, { secretAccessKey, sessionToken: null }],
  ]);
  const keysByArn = new Map<string, AwsKey>();
  /** `account:region:alias/NAME` → key ARN. */
  const aliases = new Map<string, string>();
  const requests: AwsKmsRecordedRequest[] = [];

  function keyArn(region: string, account: string, keyId: string): string {
    return `arn:aws:kms:${region}:${account}:key/${keyId}`;
  }

  /** Resolves KeyId in the caller's account and region, as KMS does. */
  function resolve(keyId: string, region: string, account: string): AwsKey {
    const arn = ARN_RE.exec(keyId);
    if (arn) {
      const arnRegion = arn[2]!;
      const arnAccount = arn[3]!;
      const kind = arn[4]!;
      const rest = arn[5]!;
      if (arnRegion !== region) throw new AwsError('NotFoundException', `Invalid arn ${arnRegion}`);
      if (kind === 'alias') return resolveAlias(`alias/${rest}`, arnRegion, arnAccount);
      const key = keysByArn.get(keyArn(arnRegion, arnAccount, rest));
      if (!key) throw new AwsError('NotFoundException', `Key '${keyId}' does not exist`);
      return key;
    }
    if (keyId.startsWith('alias/')) return resolveAlias(keyId, region, account);
    if (!UUID_RE.test(keyId)) throw new AwsError('NotFoundException', `Invalid keyId '${keyId}'`);
    const key = keysByArn.get(keyArn(region, account, keyId));
    if (!key)
      throw new AwsError('NotFoundException', `Key '${keyArn(region, account, keyId)}' does not exist`);
    return key;
  }

  function resolveAlias(alias: string, region: string, account: string): AwsKey {
    const target = aliases.get(`${account}:${region}:${alias}`);
    const key = target ? keysByArn.get(target) : undefined;
    if (!key) {
      throw new AwsError(
        'NotFoundException',
        `Alias arn:aws:kms:${region}:${account}:${alias} is not found.`,
      );
    }
    return key;
  }

  /** For the controls: a key id or alias in the default region/account, or any ARN. */
  function controlKey(keyIdOrAlias: string): AwsKey {
    const arn = ARN_RE.exec(keyIdOrAlias);
    const region = arn ? arn[2]! : defaultRegion;
    const account = arn ? arn[3]! : defaultAccount;
    const alias = !arn && !keyIdOrAlias.startsWith('alias/') && !UUID_RE.test(keyIdOrAlias);
    return resolve(alias ? normalizeAlias(keyIdOrAlias) : keyIdOrAlias, region, account);
  }

  function checkUsable(key: AwsKey, operation: string): void {
    if (key.denied.has(operation)) {
      throw new AwsError(
        'AccessDeniedException',
        `User: arn:aws:iam::${defaultAccount}:user/credvault-test is not authorized to perform: kms:${operation} ` +
          `on resource: ${key.arn} because no resource-based policy allows the kms:${operation} action`,
      );
    }
    if (operation === 'DescribeKey') return;
    if (key.state === 'Disabled') throw new AwsError('DisabledException', `${key.arn} is disabled.`);
    if (key.state === 'PendingDeletion') {
      throw new AwsError('KMSInvalidStateException', `${key.arn} is pending deletion.`);
    }
  }

  function blobHeader(key: AwsKey, version: number): Buffer {
    const arn = Buffer.from(key.arn, 'utf8');
    return Buffer.concat([BLOB_MAGIC, Buffer.from([arn.length]), arn, Buffer.from([version])]);
  }

  function wrap(key: AwsKey, plaintext: Buffer, context: Record<string, string>): Buffer {
    const version = key.materials.length;
    const header = blobHeader(key, version);
    const sealed = seal(
      key.materials[version - 1]!,
      plaintext,
      Buffer.concat([header, canonicalContext(context)]),
    );
    return Buffer.concat([header, sealed]);
  }

  /** Parses a blob's header: which key and material version made it. Null when it is not ours. */
  function parseBlob(blob: Buffer): { arn: string; version: number; header: Buffer; sealed: Buffer } | null {
    if (blob.length < BLOB_MAGIC.length + 2 || !blob.subarray(0, 4).equals(BLOB_MAGIC)) return null;
    const arnLength = blob[4]!;
    const headerLength = 5 + arnLength + 1;
    if (blob.length < headerLength) return null;
    return {
      arn: blob.subarray(5, 5 + arnLength).toString('utf8'),
      version: blob[5 + arnLength]!,
      header: blob.subarray(0, headerLength),
      sealed: blob.subarray(headerLength),
    };
  }

  // -------------------------------------------------------------------------------------------------
  // Authentication

  async function authenticate(req: KmsHttpRequest): Promise<{ region: string; account: string }> {
    const authorization = req.headers['authorization'];
    if (!authorization) {
      throw new AwsError('MissingAuthenticationTokenException', 'Missing Authentication Token', 403);
    }
    const space = authorization.indexOf(' ');
    const algorithm = space === -1 ? authorization : authorization.slice(0, space);
    if (algorithm !== 'AWS4-HMAC-SHA256') {
      throw new AwsError('IncompleteSignatureException', `Unsupported AWS 'algorithm': '${algorithm}'`);
    }
    const params = new Map<string, string>();
    for (const part of authorization.slice(space + 1).split(',')) {
      const eq = part.indexOf('=');
      if (eq > 0) params.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
    const missing = ['Credential', 'SignedHeaders', 'Signature'].filter((p) => !params.get(p));
    const amzDate = req.headers['x-amz-date'];
    const problems = missing.map((p) => `Authorization header requires '${p}' parameter.`);
    if (!amzDate && !req.headers['date']) {
      problems.push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    }
    if (problems.length > 0) {
      throw new AwsError(
        'IncompleteSignatureException',
        `${problems.join(' ')} Authorization=${authorization}`,
      );
    }
    const scope = params.get('Credential')!.split('/');
    if (scope.length !== 5 || scope.some((s) => s === '') || !/^\d{8}$/.test(scope[1]!)) {
      throw new AwsError(
        'IncompleteSignatureException',
        `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${params.get('Credential')}'`,
      );
    }
    const [keyId, date, region, service, terminator] = scope as [string, string, string, string, string];
    if (!/^[0-9a-f]{64}$/.test(params.get('Signature')!)) {
      throw new AwsError('IncompleteSignatureException', 'Signature must be 64 lowercase hex characters.');
    }
    const signed = params.get('SignedHeaders')!.split(';');
    if (!signed.includes('host')) {
      throw new AwsError(
        'IncompleteSignatureException',
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
      );
    }
    const dateMatch = amzDate ? AMZ_DATE_RE.exec(amzDate) : null;
    if (!dateMatch) {
      throw new AwsError(
        'IncompleteSignatureException',
        `X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'", got '${amzDate ?? ''}'`,
      );
    }
    if (dateMatch[1] !== date) {
      throw new AwsError(
        'InvalidSignatureException',
        `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${date}' != '${dateMatch[1]}', from '${amzDate}'.`,
      );
    }
    if (service !== 'kms') {
      throw new AwsError(
        'InvalidSignatureException',
        "Credential should be scoped to correct service: 'kms'. ",
      );
    }
    if (terminator !== 'aws4_request') {
      throw new AwsError(
        'InvalidSignatureException',
        `Credential should be scoped with a valid terminator: 'aws4_request', not '${terminator}'. `,
      );
    }
    const credentials = accessKeys.get(keyId);
    const token = req.headers['x-amz-security-token'] ?? null;
    if (!credentials || token !== credentials.sessionToken) {
      throw new AwsError(
        'UnrecognizedClientException',
        'The security token included in the request is invalid.',
      );
    }
    const [, day, hh, mm, ss] = dateMatch as unknown as [string, string, string, string, string];
    const signedAt = Date.UTC(
      Number(day.slice(0, 4)),
      Number(day.slice(4, 6)) - 1,
      Number(day.slice(6, 8)),
      Number(hh),
      Number(mm),
      Number(ss),
    );
    const now = Date.now() + double.clockSkewMs;
    if (signedAt < now - SIGNATURE_WINDOW_MS) {
      throw new AwsError(
        'InvalidSignatureException',
        `Signature expired: ${amzDate} is now earlier than ${amzDateOf(now - SIGNATURE_WINDOW_MS)} (${amzDateOf(now)} - 5 min.)`,
      );
    }
    if (signedAt > now + SIGNATURE_WINDOW_MS) {
      throw new AwsError(
        'InvalidSignatureException',
        `Signature not yet current: ${amzDate} is still later than ${amzDateOf(now + SIGNATURE_WINDOW_MS)} (${amzDateOf(now)} + 5 min.)`,
      );
    }
    if ((await expectedSignature(req, signed, credentials, region, signedAt)) !== params.get('Signature')) {
      throw new AwsError(
        'InvalidSignatureException',
        'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
      );
    }
    return { region, account: defaultAccount };
  }

  /** The signature over the headers the request says it signed, with the secret the double holds. */
  async function expectedSignature(
    req: KmsHttpRequest,
    signed: string[],
    credentials: { secretAccessKey: string; sessionToken: string | null },
    region: string,
    signedAt: number,
  ): Promise<string> {
    const headers: Record<string, string> = {};
    for (const name of signed) {
      const value = req.headers[name];
      if (value !== undefined) headers[name] = value;
    }
    const signer = new SignatureV4({
      service: 'kms',
      region,
      sha256: NodeSha256,
      // Only what the client signed: no x-amz-content-sha256 of the double's own.
      applyChecksum: false,
      credentials: {
        accessKeyId: 'recomputed',
        secretAccessKey: credentials.secretAccessKey,
        ...(credentials.sessionToken && signed.includes('x-amz-security-token')
          ? { sessionToken: credentials.sessionToken }
          : {}),
      },
    });
    const signedRequest = await signer.sign(
      {
        method: req.method,
        protocol: 'http:',
        hostname: (req.headers['host'] ?? '').replace(/:\d+$/, ''),
        path: req.path,
        query: Object.fromEntries(req.query),
        headers,
        body: req.body,
      },
      { signingDate: new Date(signedAt), signableHeaders: new Set(signed) },
    );
    const authorization = String(signedRequest.headers['authorization'] ?? '');
    return /Signature=([0-9a-f]{64})/.exec(authorization)?.[1] ?? '';
  }

  // -------------------------------------------------------------------------------------------------
  // Operations

  async function handle(req: KmsHttpRequest, record: AwsKmsRecordedRequest): Promise<KmsReply> {
    if (req.method !== 'POST' || req.path !== '/') {
      throw new AwsError('UnknownOperationException', null, 404);
    }
    const caller = await authenticate(req);
    if (double.fault) throw new AwsError(double.fault.type, double.fault.message, double.fault.status);
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const target = req.headers['x-amz-target'] ?? '';
    if (contentType !== JSON_11 || !target.startsWith('TrentService.')) {
      throw new AwsError('UnknownOperationException', null);
    }
    const body = record.json;
    if (!body)
      throw new AwsError('SerializationException', 'Start of structure or map found where not expected.');
    const operation = target.slice('TrentService.'.length);
    if (body['DryRun'] === true) {
      throw new AwsError(
        'DryRunOperationException',
        'The request would have succeeded, but the DryRun option is set.',
      );
    }

    const lookup = (): AwsKey => {
      const keyId = requireString(body, 'KeyId', 'keyId');
      const key = resolve(keyId, caller.region, caller.account);
      record.keyArn = key.arn;
      return key;
    };

    switch (operation) {
      case 'Encrypt': {
        const plaintext = blobField(body, 'Plaintext', 'plaintext', 4096);
        const context = encryptionContext(body);
        checkAlgorithm(body);
        const key = lookup();
        checkUsable(key, operation);
        return awsReply(200, {
          CiphertextBlob: wrap(key, plaintext, context).toString('base64'),
          KeyId: key.arn,
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        });
      }
      case 'Decrypt': {
        const blob = blobField(body, 'CiphertextBlob', 'ciphertextBlob', 6144);
        const context = encryptionContext(body);
        checkAlgorithm(body);
        const parsed = parseBlob(blob);
        if (!parsed) throw new AwsError('InvalidCiphertextException', null);
        const blobKey = keysByArn.get(parsed.arn);
        if (body['KeyId'] !== undefined && body['KeyId'] !== null) {
          const requested = lookup();
          if (requested !== blobKey) {
            throw new AwsError(
              'IncorrectKeyException',
              'The key ID in the request does not identify a CMK that can perform this operation.',
            );
          }
        }
        if (!blobKey) throw new AwsError('InvalidCiphertextException', null);
        record.keyArn = blobKey.arn;
        if (blobKey.region !== caller.region) throw new AwsError('InvalidCiphertextException', null);
        checkUsable(blobKey, operation);
        const material = blobKey.materials[parsed.version - 1];
        const plaintext = material
          ? open(material, parsed.sealed, Buffer.concat([parsed.header, canonicalContext(context)]))
          : null;
        if (!plaintext) throw new AwsError('InvalidCiphertextException', null);
        return awsReply(200, {
          KeyId: blobKey.arn,
          Plaintext: plaintext.toString('base64'),
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        });
      }
      case 'GenerateDataKey':
      case 'GenerateDataKeyWithoutPlaintext': {
        const keySpec = body['KeySpec'];
        const numberOfBytes = body['NumberOfBytes'];
        const hasSpec = keySpec !== undefined && keySpec !== null;
        const hasBytes = numberOfBytes !== undefined && numberOfBytes !== null;
        if (hasSpec === hasBytes) {
          throw new AwsError('ValidationException', 'Please specify either number of bytes or key spec.');
        }
        let length: number;
        if (hasSpec) {
          if (keySpec !== 'AES_256' && keySpec !== 'AES_128') {
            throw validation(
              `Value '${String(keySpec)}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]`,
            );
          }
          length = keySpec === 'AES_256' ? 32 : 16;
        } else {
          if (typeof numberOfBytes !== 'number' || !Number.isInteger(numberOfBytes)) {
            throw new AwsError('SerializationException', "Unexpected value type for 'NumberOfBytes'");
          }
          if (numberOfBytes < 1 || numberOfBytes > 1024) {
            throw validation(
              `Value '${numberOfBytes}' at 'numberOfBytes' failed to satisfy constraint: Member must have value ${numberOfBytes < 1 ? 'greater than or equal to 1' : 'less than or equal to 1024'}`,
            );
          }
          length = numberOfBytes;
        }
        const context = encryptionContext(body);
        const key = lookup();
        checkUsable(key, operation);
        const plaintext = randomBytes(length);
        const result: Record<string, string> = {
          CiphertextBlob: wrap(key, plaintext, context).toString('base64'),
          KeyId: key.arn,
        };
        if (operation === 'GenerateDataKey') result['Plaintext'] = plaintext.toString('base64');
        return awsReply(200, result);
      }
      case 'DescribeKey': {
        const key = lookup();
        checkUsable(key, operation);
        return awsReply(200, {
          KeyMetadata: {
            AWSAccountId: key.account,
            KeyId: key.keyId,
            Arn: key.arn,
            CreationDate: key.created / 1000,
            Enabled: key.state === 'Enabled',
            Description: key.description,
            KeyUsage: 'ENCRYPT_DECRYPT',
            KeyState: key.state,
            ...(key.state === 'PendingDeletion'
              ? { DeletionDate: (Date.now() + 30 * 86_400_000) / 1000, PendingDeletionWindowInDays: 30 }
              : {}),
            Origin: 'AWS_KMS',
            KeyManager: 'CUSTOMER',
            CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
            KeySpec: 'SYMMETRIC_DEFAULT',
            EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
            MultiRegion: false,
          },
        });
      }
      default:
        throw new AwsError('UnknownOperationException', null);
    }
  }

  const double: AwsKmsDouble = {
    url: '',
    port: 0,
    region: defaultRegion,
    account: defaultAccount,
    accessKeyId,
    secretAccessKey,
    down: false,
    fault: null,
    requests,
    close: async () => {},
    createKey(opts = {}) {
      const region = opts.region ?? defaultRegion;
      const account = opts.account ?? defaultAccount;
      const keyId = randomUUID();
      const key: AwsKey = {
        keyId,
        arn: keyArn(region, account, keyId),
        region,
        account,
        description: opts.description ?? '',
        created: Math.floor(Date.now() / 1000) * 1000,
        state: 'Enabled',
        materials: [newKeySecret()],
        denied: new Set(),
      };
      keysByArn.set(key.arn, key);
      if (opts.alias !== undefined) {
        const alias = normalizeAlias(opts.alias);
        const slot = `${account}:${region}:${alias}`;
        if (aliases.has(slot)) throw new Error(`alias ${alias} already exists in ${account}/${region}`);
        aliases.set(slot, key.arn);
      }
      return { keyId, arn: key.arn };
    },
    createAlias(alias, keyIdOrArn) {
      const key = controlKey(keyIdOrArn);
      aliases.set(`${key.account}:${key.region}:${normalizeAlias(alias)}`, key.arn);
    },
    deny(keyIdOrAlias, operations = AWS_KMS_OPERATIONS) {
      const key = controlKey(keyIdOrAlias);
      for (const op of operations) key.denied.add(op);
    },
    allow(keyIdOrAlias, operations = AWS_KMS_OPERATIONS) {
      const key = controlKey(keyIdOrAlias);
      for (const op of operations) key.denied.delete(op);
    },
    disable(keyIdOrAlias) {
      controlKey(keyIdOrAlias).state = 'Disabled';
    },
    enable(keyIdOrAlias) {
      controlKey(keyIdOrAlias).state = 'Enabled';
    },
    scheduleDeletion(keyIdOrAlias) {
      controlKey(keyIdOrAlias).state = 'PendingDeletion';
    },
    rotate(keyIdOrAlias) {
      const key = controlKey(keyIdOrAlias);
      if (key.materials.length >= 255) throw new Error('too many rotations');
      key.materials.push(newKeySecret());
    },
    addAccessKey(id, opts = {}) {
      const secret = opts.secretAccessKey ?? randomBytes(30).toString('base64');
      const sessionToken = id.startsWith('ASIA')
        ? (opts.sessionToken ?? randomBytes(96).toString('base64'))
        : null;
      accessKeys.set(id, { secretAccessKey: secret, sessionToken });
      return {
        accessKeyId: id,
        secretAccessKey: secret,
        ...(sessionToken ? { sessionToken } : {}),
      };
    },
    clockSkewMs: 0,
    keyState(keyIdOrAlias) {
      return controlKey(keyIdOrAlias).state;
    },
  };

  const server = await startKmsServer(async (req) => {
    const json = parseJsonObject(req.body);
    const target = req.headers['x-amz-target'] ?? '';
    const keyId = json && typeof json['KeyId'] === 'string' ? json['KeyId'] : null;
    const record: AwsKmsRecordedRequest = {
      ...req,
      at: Date.now(),
      operation: target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : null,
      keyId,
      keyArn: null,
      json,
    };
    requests.push(record);
    if (double.down) return DROP;
    let reply: KmsReply;
    try {
      reply = await handle(req, record);
    } catch (err) {
      if (!(err instanceof AwsError)) throw err;
      reply = errorReply(err);
    }
    // The double's clock, which the SDK reads to correct its own after a "Signature expired".
    return {
      ...reply,
      headers: { ...reply.headers, date: new Date(Date.now() + double.clockSkewMs).toUTCString() },
    };
  });
  double.url = server.url;
  double.port = server.port;
  double.close = server.close;
  return double;
}
