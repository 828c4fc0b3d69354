import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { OAuth2Client } from 'google-auth-library';
import { KeyError, quoted, UnavailableError } from '../../errors.js';
import { isCredvaultProcess } from '../../util/own-process.js';
import type { KeySource, WrapContext } from '../key-source.js';
import {
  endpointUrl,
  KmsUriError,
  kmsKeyId,
  networkCause,
  parseWrapped,
  splitKmsUri,
  storeWrapped,
} from '../kms.js';

const SCHEME = 'gcp-kms://';
const PREFIX = 'gcp';
const KEY_NAME = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;
const TIMEOUT_MS = 15_000;

type ClientOptions = NonNullable<ConstructorParameters<typeof KeyManagementServiceClient>[0]>;

/**
 * gcp-metadata warns on stderr (process.emitWarning) when its probe of the metadata server fails in a
 * way it did not expect (off Google Cloud, a network that refuses link-local addresses): a line that
 * is no part of credvault's output (and breaks --json's one document on stderr). Credentials not
 * found are reported as a KeyError instead; other warnings pass through.
 */
let metadataWarningsQuiet = false;
function quietMetadataWarnings(): void {
  if (metadataWarningsQuiet) return;
  metadataWarningsQuiet = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
    if (type === 'MetadataLookupWarning') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/**
 * Google Cloud KMS through @google-cloud/kms, on its HTTP/JSON transport (`fallback: true`: no gRPC
 * channel to open for two calls, and the same requests a proxy or a test server sees). Encrypt and
 * Decrypt with associated data naming the vault and the data key; Cloud KMS has no data-key
 * generation, so data keys are made locally and wrapped.
 *
 * `gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`. Credentials: an access token in
 * GOOGLE_OAUTH_ACCESS_TOKEN (as Terraform's Google provider takes it), else Application Default
 * Credentials (see googleCredentials). Endpoint: `?endpoint=URL`, else
 * CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS (gcloud's override).
 */
export function openGcpKms(uri: string, env: NodeJS.ProcessEnv, vaultName: string): KeySource {
  const { key, query } = splitKmsUri(uri, SCHEME);
  if (!KEY_NAME.test(key)) {
    throw new KmsUriError(
      uri,
      'is not a Cloud KMS key name',
      'Use gcp-kms://projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY.',
    );
  }
  const options: ClientOptions = { fallback: true };
  const endpoint = query.get('endpoint') ?? env.CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS;
  if (endpoint) {
    const url = endpointUrl(endpoint);
    if (!url) {
      if (query.get('endpoint'))
        throw new KmsUriError(
          uri,
          `has an endpoint that is not an http(s) URL (${quoted(endpoint)})`,
          'Give endpoint=https://HOST[:PORT].',
        );
      throw new KeyError(
        `the Cloud KMS endpoint ${quoted(endpoint)} (CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS) is not an http(s) URL`,
      );
    }
    options.apiEndpoint = url.hostname;
    options.protocol = url.protocol.replace(':', '');
    options.port = Number(url.port || (url.protocol === 'http:' ? 80 : 443));
  }
  Object.assign(options, googleCredentials(env));
  // Only in credvault's own processes: a program using the library keeps its process's warnings.
  if (!options.authClient && isCredvaultProcess) quietMetadataWarnings();
  return new GcpKmsKeySource(new KeyManagementServiceClient(options), key, vaultName);
}

/**
 * Credentials from `env` (the process's environment for the CLI, the one given to openVault in the
 * library): GOOGLE_OAUTH_ACCESS_TOKEN, else the file GOOGLE_APPLICATION_CREDENTIALS names, else
 * Application Default Credentials. google-auth-library reads ADC's variables from process.env itself:
 * with another environment, its well-known file (gcloud's, under CLOUDSDK_CONFIG or HOME) is looked up
 * here, and a GOOGLE_APPLICATION_CREDENTIALS found only in process.env is refused rather than used.
 */
function googleCredentials(env: NodeJS.ProcessEnv): Pick<ClientOptions, 'authClient' | 'keyFilename'> {
  const token = env.GOOGLE_OAUTH_ACCESS_TOKEN?.trim();
  if (token) {
    const auth = new OAuth2Client();
    // No refresh token and no expiry: the token is used as given until Google refuses it.
    auth.setCredentials({ access_token: token });
    return { authClient: auth as unknown as ClientOptions['authClient'] };
  }
  const file = env.GOOGLE_APPLICATION_CREDENTIALS?.trim();
  if (file) return { keyFilename: readableFile(file, 'GOOGLE_APPLICATION_CREDENTIALS') };
  if (env === process.env) return {};
  const gcloud = env.CLOUDSDK_CONFIG?.trim() || join(env.HOME?.trim() || homedir(), '.config', 'gcloud');
  const wellKnown = join(gcloud, 'application_default_credentials.json');
  if (existsSync(wellKnown)) return { keyFilename: readableFile(wellKnown, 'gcloud') };
  if (process.env.GOOGLE_APPLICATION_CREDENTIALS?.trim()) {
    throw new KeyError('no Google credentials in the environment credvault was given', {
      hint: "Set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_OAUTH_ACCESS_TOKEN in it: this process's own GOOGLE_APPLICATION_CREDENTIALS is not used for a vault opened with another environment.",
    });
  }
  // Left to ADC: the metadata server, on Google Cloud.
  return {};
}

/** A credentials file, checked before the client reads it (its error would look like a network one). */
function readableFile(path: string, from: string): string {
  try {
    if (statSync(path).isFile()) return path;
  } catch (error) {
    throw new KeyError(
      `cannot read the Google credentials file ${path} (from ${from}): ${(error as NodeJS.ErrnoException).code ?? 'unreadable'}`,
      { hint: 'Check the path and its permissions.', cause: error },
    );
  }
  throw new KeyError(`the Google credentials file ${path} (from ${from}) is not a file`);
}

class GcpKmsKeySource implements KeySource {
  readonly kind = 'gcp-kms' as const;
  readonly origin: string;
  readonly keyId: string;
  readonly #client: KeyManagementServiceClient;
  readonly #key: string;
  readonly #vaultName: string;

  constructor(client: KeyManagementServiceClient, key: string, vaultName: string) {
    this.#client = client;
    this.#key = key;
    this.origin = `gcp-kms://${key}`;
    this.keyId = kmsKeyId('gcp-kms', key);
    this.#vaultName = vaultName;
  }

  #aad(vaultName: string, context: WrapContext): Buffer {
    return Buffer.from(`credvault:vault=${vaultName};data-key=${context.dataKeyId}`, 'utf8');
  }

  /**
   * Both calls carry CRC32C checksums of what they send, and their answers are checked against
   * theirs, as Google's EncryptResponse and DecryptResponse documentation asks: a request Cloud KMS
   * received damaged is refused by it (INVALID_ARGUMENT), and an answer damaged on the way back is
   * discarded here and asked for once more before it is an error. A ciphertext stored unchecked would
   * be found damaged only when the secrets it protects are next read.
   */
  async wrap(dataKey: Buffer, context: WrapContext): Promise<string> {
    const aad = this.#aad(this.#vaultName, context);
    const ciphertext = await this.#call('encrypt', context, async () => {
      const [out] = await this.#client.encrypt(
        {
          name: this.#key,
          plaintext: dataKey,
          additionalAuthenticatedData: aad,
          plaintextCrc32c: { value: crc32c(dataKey) },
          additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
        },
        { timeout: TIMEOUT_MS, maxRetries: 2 },
      );
      if (!out.ciphertext)
        throw new KeyError(`Cloud KMS answered encrypt for ${this.#key} without a ciphertext`);
      const bytes = toBuffer(out.ciphertext);
      if (!out.verifiedPlaintextCrc32c) throw new IntegrityFailure('verified_plaintext_crc32c is not true');
      if (!out.verifiedAdditionalAuthenticatedDataCrc32c)
        throw new IntegrityFailure('verified_additional_authenticated_data_crc32c is not true');
      if (int64(out.ciphertextCrc32c) !== BigInt(crc32c(bytes)))
        throw new IntegrityFailure('ciphertext_crc32c does not match the ciphertext');
      // The key version that encrypted: one of this key's, not another key's answer.
      if (!out.name?.startsWith(`${this.#key}/cryptoKeyVersions/`))
        throw new IntegrityFailure(`it names ${out.name ? `the key version ${out.name}` : 'no key version'}`);
      return bytes;
    });
    return storeWrapped(PREFIX, this.#vaultName, ciphertext);
  }

  async unwrap(wrapped: string, context: WrapContext): Promise<Buffer> {
    const { vaultName, ciphertext } = parseWrapped(PREFIX, wrapped, context.dataKeyId, 'Cloud KMS');
    const aad = this.#aad(vaultName, context);
    return this.#call('decrypt', context, async () => {
      const [out] = await this.#client.decrypt(
        {
          name: this.#key,
          ciphertext,
          additionalAuthenticatedData: aad,
          ciphertextCrc32c: { value: crc32c(ciphertext) },
          additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
        },
        { timeout: TIMEOUT_MS, maxRetries: 2 },
      );
      if (!out.plaintext)
        throw new KeyError(`Cloud KMS answered decrypt for ${this.#key} without a plaintext`);
      const plaintext = toBuffer(out.plaintext);
      if (int64(out.plaintextCrc32c) !== BigInt(crc32c(plaintext))) {
        plaintext.fill(0);
        throw new IntegrityFailure('plaintext_crc32c does not match the plaintext');
      }
      return plaintext;
    });
  }

  async close(): Promise<void> {
    try {
      await this.#client.close();
    } catch {
      // A client that never started (no credentials found: #call reported it) has nothing to close;
      // its close() answers with the error that stopped it starting.
    }
  }

  /**
   * One call and the check of its answer; an answer that fails its integrity check is asked for once
   * more (Google: "discard the response and retry a limited number of times").
   */
  async #call<T>(operation: string, context: WrapContext, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        // The client finds its credentials when it starts. Its methods start it with
        // `initialize().catch((err) => { throw err; })`: credentials it cannot find (no ADC, no
        // metadata server) would be a rejection nobody handles, ending the process with a stack
        // instead of the KeyError below. Started and awaited here first, a failure is mapped as any
        // other, and a method is never called on a client that did not start.
        await this.#client.initialize();
        return await fn();
      } catch (error) {
        if (error instanceof IntegrityFailure && attempt < 2) continue;
        if (error instanceof IntegrityFailure) {
          throw new KeyError(
            `Cloud KMS's answer to ${operation} on ${this.#key} for data key ${context.dataKeyId} failed its integrity check twice (${error.message}); it was discarded`,
            {
              hint: 'Nothing was written. Something between credvault and Cloud KMS (a proxy, a TLS-inspecting middlebox) may be altering its answers: check the network path, then try again.',
            },
          );
        }
        throw describeGcpError(error, operation, this.#key, context);
      }
    }
  }
}

/** An answer whose checksums or key version do not match what was asked: discarded, never used. */
class IntegrityFailure extends Error {}

/** A `google.protobuf.Int64Value` as the client decodes it (a number, a string or a Long); null when absent. */
function int64(value: { value?: unknown } | null | undefined): bigint | null {
  const inner = value?.value;
  if (inner === null || inner === undefined) return null;
  try {
    return BigInt(String(inner));
  } catch {
    return null;
  }
}

/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of Cloud KMS's *_crc32c fields.
 * Table-driven here: no CRC32C package is among the dependencies (node:zlib's crc32 is the IEEE
 * polynomial), and a data key and its associated data are a few dozen bytes.
 */
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC32C_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function toBuffer(value: Uint8Array | string): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'base64') : Buffer.from(value);
}

const GRPC_STATUS: Record<number, string> = {
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  5: 'NOT_FOUND',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  16: 'UNAUTHENTICATED',
};

const HINTS: Record<string, string> = {
  PERMISSION_DENIED: 'Grant this identity roles/cloudkms.cryptoKeyEncrypterDecrypter on the key.',
  UNAUTHENTICATED:
    'Check the Google credentials (Application Default Credentials or GOOGLE_OAUTH_ACCESS_TOKEN).',
  NOT_FOUND: 'Check the key name in CREDENTIAL_KMS_URI.',
  INVALID_ARGUMENT:
    'The wrapped data key does not belong to this key, or its associated data (vault name) differs.',
  FAILED_PRECONDITION: 'The key version is disabled or destroyed; enable it in Cloud KMS.',
};

/**
 * The statuses Google's API guidance says to retry (with backoff): the service, not the key or the
 * identity, could not answer now. RESOURCE_EXHAUSTED is a request quota here (Cloud KMS has no other
 * resource a call can exhaust).
 */
const TRANSIENT = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'INTERNAL']);

/**
 * Cloud KMS errors come in two shapes: google-gax's GoogleError (a gRPC code, a message) when its own
 * fetch made the call, and gaxios's GaxiosError (an HTTP status, the JSON body as its message) when a
 * google-auth-library client did. Both carry Google's own status and message: a refusal is a KeyError,
 * the service being out of reach or saying to retry an UnavailableError.
 */
function describeGcpError(
  error: unknown,
  operation: string,
  key: string,
  context: WrapContext,
): KeyError | UnavailableError {
  if (error instanceof KeyError || error instanceof UnavailableError) return error;
  const e = error as { code?: unknown; status?: unknown; message?: string; details?: string };
  let status: string | null = null;
  let message = e.details || e.message || String(error);
  let http: number | null = typeof e.status === 'number' ? e.status : null;
  try {
    const body = JSON.parse(e.message ?? '') as {
      error?: { code?: number; status?: string; message?: string };
    };
    if (body.error) {
      status = body.error.status ?? null;
      message = body.error.message ?? message;
      http = body.error.code ?? http;
    }
  } catch {
    // Not a JSON body: a GoogleError or a network failure.
  }
  if (!status && typeof e.code === 'number' && e.code < 100) status = GRPC_STATUS[e.code] ?? `code ${e.code}`;
  const network = networkCause(error);
  if (network && !http && (!status || status === 'UNAVAILABLE')) {
    return new UnavailableError(`Cloud KMS is unreachable (${operation} on ${key}): ${network}`, {
      hint: 'Check the network path to Cloud KMS and try again; nothing was written.',
      cause: error,
    });
  }
  if (/Could not load the default credentials/i.test(message)) {
    return new KeyError(
      `no Google credentials for Cloud KMS: ${message.split('\n')[0]!.replace(/\.+$/, '')}`,
      {
        hint: 'Set up Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, a workload identity) or GOOGLE_OAUTH_ACCESS_TOKEN.',
        cause: error,
      },
    );
  }
  const what = `${operation} on ${key} for data key ${context.dataKeyId}${http ? ` (HTTP ${http})` : ''}: ${status ? `${status}: ` : ''}${message.split('\n')[0]}`;
  // A 5xx without a Google status is a proxy in front of the service failing: retried later too.
  if ((status && TRANSIENT.has(status)) || (!status && http !== null && http >= 500)) {
    return new UnavailableError(`Cloud KMS could not answer ${what}`, {
      hint: 'Try again later: Cloud KMS could not answer now; nothing was written.',
      cause: error,
    });
  }
  return new KeyError(`Cloud KMS refused ${what}`, {
    hint: status ? HINTS[status] : undefined,
    cause: error,
  });
}
