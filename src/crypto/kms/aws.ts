import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
  type KMSClientConfig,
} from '@aws-sdk/client-kms';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { KeyError, quoted, UnavailableError } from '../../errors.js';
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

const SCHEME = 'aws-kms://';
const PREFIX = 'aws';

/**
 * AWS KMS through @aws-sdk/client-kms: GenerateDataKey for new data keys, Encrypt to wrap an existing
 * one (a rotation from a local key), Decrypt to unwrap. The encryption context names the vault and the
 * data key, so a wrapped key opens only for the row it belongs to, and an IAM condition on
 * `kms:EncryptionContext:credvault:vault` can confine a role to one vault.
 *
 * `aws-kms://KEY` takes a key id, key ARN, `alias/NAME` or alias ARN. Everything comes from `env` (the
 * process's environment for the CLI, the one given to openVault in the library), never from
 * process.env behind its back, which is where the SDK would read it by itself:
 * - region: the ARN's, else `?region=`, else AWS_REGION (or AWS_DEFAULT_REGION);
 * - endpoint: `?endpoint=`, else AWS_ENDPOINT_URL_KMS, else AWS_ENDPOINT_URL (the SDK's names for
 *   them; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true skips the last two);
 * - credentials: see awsCredentials.
 */
export function openAwsKms(uri: string, env: NodeJS.ProcessEnv, vaultName: string): KeySource {
  const { key, query } = splitKmsUri(uri, SCHEME);
  if (!key) {
    throw new KmsUriError(
      uri,
      'names no key',
      'Use aws-kms://KEY-ID, aws-kms://alias/NAME or aws-kms://arn:aws:kms:REGION:ACCOUNT:key/KEY-ID.',
    );
  }
  const arnRegion = /^arn:aws[\w-]*:kms:([a-z0-9-]+):/.exec(key)?.[1];
  const config: KMSClientConfig = {
    maxAttempts: 3,
    credentials: awsCredentials(env),
    // The endpoint is the one chosen below or the region's own, not one the SDK finds in process.env
    // or ~/.aws/config.
    ignoreConfiguredEndpointUrls: true,
  };
  const profile = env.AWS_PROFILE?.trim();
  // The profile the SDK reads its other settings from: a region in ~/.aws/config, when the
  // environment is the process's own (one given to the library must name the region itself).
  if (profile) config.profile = profile;
  const region =
    arnRegion ?? query.get('region') ?? (env.AWS_REGION?.trim() || env.AWS_DEFAULT_REGION?.trim());
  if (region) config.region = region;
  else if (env !== process.env) {
    // The SDK would look in process.env: an environment given to the library is the whole of it.
    throw new KeyError('no AWS region for KMS in the environment credvault was given', {
      hint: 'Use a key ARN, add ?region=REGION to CREDENTIAL_KMS_URI, or set AWS_REGION in that environment.',
    });
  }
  const endpoint = query.get('endpoint');
  if (endpoint) {
    // Checked here, as for gcp-kms: the SDK would take it and fail at the first call, as a refusal.
    if (!endpointUrl(endpoint)) {
      throw new KmsUriError(
        uri,
        `has an endpoint that is not an http(s) URL (${quoted(endpoint)})`,
        'Give endpoint=https://HOST[:PORT].',
      );
    }
    config.endpoint = endpoint;
  } else if (!/^true$/i.test(env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS?.trim() ?? '')) {
    for (const variable of ['AWS_ENDPOINT_URL_KMS', 'AWS_ENDPOINT_URL']) {
      const value = env[variable]?.trim();
      if (!value) continue;
      if (!endpointUrl(value)) {
        throw new KeyError(`${variable} ${quoted(value)} is not an http(s) URL`, {
          hint: `Set ${variable}=https://HOST[:PORT], or unset it to use the region's KMS endpoint.`,
        });
      }
      config.endpoint = value;
      break;
    }
  }
  // The SDK warns on Node 20 (releases after January 2027 need Node 22) on every construction: a CLI
  // that CI runs many times keeps that out of its stderr. The installed version supports Node 20.
  const quiet = process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const client = new KMSClient({
    ...config,
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 15_000 },
  });
  if (quiet === undefined) delete process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  else process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = quiet;
  const origin = `aws-kms://${key}`;
  return new AwsKmsKeySource(client, key, origin, vaultName);
}

/**
 * The SDK's credential chain, fed from `env`: AWS_PROFILE (from the shared files, which
 * AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE or HOME locate), else AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), else the default profile, a web identity token
 * (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), or the container's or instance's role. The order is
 * the SDK's own (a profile wins over keys); only where it reads each from changes: the chain's own
 * first step reads keys from process.env, and is skipped by naming the profile.
 */
function awsCredentials(env: NodeJS.ProcessEnv): NonNullable<KMSClientConfig['credentials']> {
  const profile = env.AWS_PROFILE?.trim();
  const accessKeyId = env.AWS_ACCESS_KEY_ID?.trim();
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY?.trim();
  if (!profile && accessKeyId && secretAccessKey) {
    const sessionToken = env.AWS_SESSION_TOKEN?.trim();
    return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
  }
  const home = env.HOME?.trim() || homedir();
  return defaultProvider({
    profile: profile || 'default',
    filepath: env.AWS_SHARED_CREDENTIALS_FILE?.trim() || join(home, '.aws', 'credentials'),
    configFilepath: env.AWS_CONFIG_FILE?.trim() || join(home, '.aws', 'config'),
    // '' rather than absent: the web identity step would otherwise read these from process.env.
    webIdentityTokenFile: env.AWS_WEB_IDENTITY_TOKEN_FILE?.trim() ?? '',
    roleArn: env.AWS_ROLE_ARN?.trim() ?? '',
    roleSessionName: env.AWS_ROLE_SESSION_NAME?.trim() || undefined,
  });
}

class AwsKmsKeySource implements KeySource {
  readonly kind = 'aws-kms' as const;
  readonly origin: string;
  readonly keyId: string;
  readonly #client: KMSClient;
  readonly #key: string;
  readonly #vaultName: string;

  constructor(client: KMSClient, key: string, origin: string, vaultName: string) {
    this.#client = client;
    this.#key = key;
    this.origin = origin;
    this.keyId = kmsKeyId('aws-kms', key);
    this.#vaultName = vaultName;
  }

  #context(vaultName: string, context: WrapContext): Record<string, string> {
    return { 'credvault:vault': vaultName, 'credvault:data-key': context.dataKeyId };
  }

  async generateDataKey(context: WrapContext): Promise<{ key: Buffer; wrapped: string }> {
    const out = await this.#call('GenerateDataKey', context, () =>
      this.#client.send(
        new GenerateDataKeyCommand({
          KeyId: this.#key,
          KeySpec: 'AES_256',
          EncryptionContext: this.#context(this.#vaultName, context),
        }),
      ),
    );
    if (!out.Plaintext || !out.CiphertextBlob) throw this.#broken('GenerateDataKey');
    return {
      key: Buffer.from(out.Plaintext),
      wrapped: storeWrapped(PREFIX, this.#vaultName, out.CiphertextBlob),
    };
  }

  async wrap(dataKey: Buffer, context: WrapContext): Promise<string> {
    const out = await this.#call('Encrypt', context, () =>
      this.#client.send(
        new EncryptCommand({
          KeyId: this.#key,
          Plaintext: dataKey,
          EncryptionContext: this.#context(this.#vaultName, context),
        }),
      ),
    );
    if (!out.CiphertextBlob) throw this.#broken('Encrypt');
    return storeWrapped(PREFIX, this.#vaultName, out.CiphertextBlob);
  }

  async unwrap(wrapped: string, context: WrapContext): Promise<Buffer> {
    const { vaultName, ciphertext } = parseWrapped(PREFIX, wrapped, context.dataKeyId, 'AWS KMS');
    const out = await this.#call('Decrypt', context, () =>
      this.#client.send(
        new DecryptCommand({
          // Naming the key makes KMS refuse a ciphertext made under another key.
          KeyId: this.#key,
          CiphertextBlob: ciphertext,
          EncryptionContext: this.#context(vaultName, context),
        }),
      ),
    );
    if (!out.Plaintext) throw this.#broken('Decrypt');
    return Buffer.from(out.Plaintext);
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }

  #broken(operation: string): KeyError {
    return new KeyError(`AWS KMS answered ${operation} for ${this.#key} without the expected fields`);
  }

  /**
   * Runs one KMS call. A refusal (access denied, a wrong key or context, bad credentials) is a
   * KeyError; KMS being out of reach or saying to try again is an UnavailableError.
   */
  async #call<T>(operation: string, context: WrapContext, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw describeAwsError(error, operation, this.#key, context);
    }
  }
}

const HINTS: Record<string, string> = {
  AccessDeniedException:
    'Allow this identity kms:Decrypt, kms:Encrypt and kms:GenerateDataKey on the key (its key policy or IAM).',
  NotFoundException: 'Check the key id or alias, and the region.',
  DisabledException: 'Enable the key in KMS.',
  KMSInvalidStateException: 'The key is disabled or pending deletion; cancel the deletion or enable it.',
  InvalidCiphertextException:
    'The wrapped data key does not belong to this key, or its encryption context (vault name) differs.',
  IncorrectKeyException: 'The data key was wrapped by another KMS key; set CREDENTIAL_KMS_URI to that key.',
  UnrecognizedClientException:
    'Check the AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE …); temporary ones (an ASIA… key id) need their AWS_SESSION_TOKEN too.',
  InvalidSignatureException:
    "Check the AWS secret access key (AWS_SECRET_ACCESS_KEY, or the profile's), and that this machine's clock is within 5 minutes of the time.",
  ExpiredTokenException: 'Refresh the AWS session credentials.',
};

/**
 * What AWS documents as "the request can be retried" for Encrypt, Decrypt and GenerateDataKey, and its
 * request-rate throttling: KMS could not answer now, which says nothing about the key or the identity.
 * KMSInvalidStateException is not here: it is the key's state (disabled, pending deletion), which a
 * person must change.
 */
const TRANSIENT = new Set([
  'ThrottlingException',
  'KMSInternalException',
  'DependencyTimeoutException',
  'KeyUnavailableException',
]);

function describeAwsError(
  error: unknown,
  operation: string,
  key: string,
  context: WrapContext,
): KeyError | UnavailableError {
  if (error instanceof KeyError || error instanceof UnavailableError) return error;
  const e = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const network = networkCause(error);
  const status = e.$metadata?.httpStatusCode;
  if ((network || e.name === 'TimeoutError') && !status) {
    return new UnavailableError(
      `AWS KMS is unreachable (${operation} on ${key}): ${network ?? e.message ?? 'no answer in time'}`,
      {
        hint: 'Check the network path to KMS (endpoint, proxy, VPC endpoint) and try again; nothing was written.',
        cause: error,
      },
    );
  }
  if (e.name === 'CredentialsProviderError' || /Could not load credentials/i.test(e.message ?? '')) {
    return new KeyError(`no AWS credentials for KMS: ${e.message}`, {
      hint: 'Provide credentials in the environment credvault reads (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_WEB_IDENTITY_TOKEN_FILE), or run with an instance or container role.',
      cause: error,
    });
  }
  if (/Region is missing/i.test(e.message ?? '')) {
    return new KeyError('no AWS region for KMS', {
      hint: 'Use a key ARN, add ?region=REGION to CREDENTIAL_KMS_URI, or set AWS_REGION.',
      cause: error,
    });
  }
  const name = e.name ?? 'Error';
  const message = e.message && e.message !== 'UnknownError' ? `: ${e.message}` : '';
  const what = `${operation} on ${key} for data key ${context.dataKeyId}${status ? ` (HTTP ${status})` : ''}: ${name}${message}`;
  // A 5xx with no name KMS documents is a server or a proxy in front of it failing: retried later too.
  if (TRANSIENT.has(name) || (status !== undefined && status >= 500)) {
    return new UnavailableError(`AWS KMS could not answer ${what}`, {
      hint: "Try again later: KMS (or a proxy in front of it) could not answer now, and the SDK's own retries ran out; nothing was written.",
      cause: error,
    });
  }
  return new KeyError(`AWS KMS refused ${what}`, { hint: HINTS[name], cause: error });
}
