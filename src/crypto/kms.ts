import { createHash } from 'node:crypto';
import { KeyError, quoted } from '../errors.js';
import type { KeySource, KeySourceKind } from './key-source.js';

/**
 * The KMS key sources, chosen by CREDENTIAL_KMS_URI. Each lives in its own module so that a process
 * loads only the client it uses (the AWS and Google SDKs are large), and none loads one when the key
 * is local.
 */

const SCHEMES: Record<string, Exclude<KeySourceKind, 'local'>> = {
  'aws-kms://': 'aws-kms',
  'gcp-kms://': 'gcp-kms',
  'vault-transit://': 'vault-transit',
};

/**
 * A KMS URI that names no key credvault can use: exit 6 when it comes from CREDENTIAL_KMS_URI (the
 * configured key is unusable); `key rotate --to-kms` turns it into bad input (exit 2) with its name.
 */
export class KmsUriError extends KeyError {
  readonly uri: string;
  readonly problem: string;

  constructor(uri: string, problem: string, hint: string) {
    super(`CREDENTIAL_KMS_URI ${quoted(uri)} ${problem}`, { hint });
    this.uri = uri;
    this.problem = problem;
  }
}

export async function openKmsKeySource(uri: string, env: NodeJS.ProcessEnv): Promise<KeySource> {
  const scheme = Object.keys(SCHEMES).find((s) => uri.startsWith(s));
  if (!scheme) {
    throw new KmsUriError(
      uri,
      'names no KMS credvault knows',
      `Use one of ${Object.keys(SCHEMES)
        .map((s) => `${s}…`)
        .join(', ')}.`,
    );
  }
  const vaultName = vaultNameFrom(env);
  switch (SCHEMES[scheme]) {
    case 'aws-kms':
      return (await import('./kms/aws.js')).openAwsKms(uri, env, vaultName);
    case 'gcp-kms':
      return (await import('./kms/gcp.js')).openGcpKms(uri, env, vaultName);
    default:
      return (await import('./kms/vault.js')).openVaultTransit(uri, env);
  }
}

const VAULT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The vault's name, part of the encryption context (AWS) or associated data (GCP) of every data key a
 * KMS wraps: a KMS key policy can then allow one vault and not another. The name is stored with each
 * wrapped key, so renaming affects only keys wrapped afterwards.
 */
export function vaultNameFrom(env: NodeJS.ProcessEnv): string {
  const name = env.CREDVAULT_VAULT_NAME?.trim() || 'credvault';
  if (!VAULT_NAME.test(name)) {
    throw new KeyError(
      `CREDVAULT_VAULT_NAME ${quoted(name)} may use only letters, digits, ".", "_" and "-" (at most 64)`,
    );
  }
  return name;
}

/** A KMS key's id as stored beside the data keys it wraps: derived from the key's name in the URI. */
export function kmsKeyId(kind: KeySourceKind, canonicalKey: string): string {
  return createHash('sha256')
    .update(`credvault/kms-key-id/v1\0${kind}\0${canonicalKey}`)
    .digest('hex')
    .slice(0, 16);
}

/** `PREFIX:v1:<vault name>:<base64 ciphertext>`: what AWS and GCP wrapped keys are stored as. */
export function storeWrapped(prefix: string, vaultName: string, ciphertext: Uint8Array): string {
  return `${prefix}:v1:${vaultName}:${Buffer.from(ciphertext).toString('base64')}`;
}

export function parseWrapped(
  prefix: string,
  wrapped: string,
  dataKeyId: string,
  what: string,
): { vaultName: string; ciphertext: Buffer } {
  const parts = wrapped.split(':');
  if (parts.length !== 4 || parts[0] !== prefix || parts[1] !== 'v1' || !VAULT_NAME.test(parts[2]!)) {
    throw new KeyError(`data key ${dataKeyId} was not wrapped by ${what}`, {
      hint: 'See `credvault key status` for the key that wrapped it.',
    });
  }
  return { vaultName: parts[2]!, ciphertext: Buffer.from(parts[3]!, 'base64') };
}

/** The parts of a KMS URI after its scheme: the key's name and the query's overrides. */
export function splitKmsUri(uri: string, scheme: string): { key: string; query: URLSearchParams } {
  const rest = uri.slice(scheme.length);
  const q = rest.indexOf('?');
  return {
    key: decodeURIComponent(q === -1 ? rest : rest.slice(0, q)),
    query: new URLSearchParams(q === -1 ? '' : rest.slice(q + 1)),
  };
}

/** An endpoint override as a URL: http or https with a host, else null (the caller names where it came from). */
export function endpointUrl(value: string): URL | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  return (url.protocol === 'https:' || url.protocol === 'http:') && url.hostname ? url : null;
}

/**
 * The error codes of a network path failing (Node's and undici's): a KMS out of reach. A file the
 * client could not read (ENOENT, EACCES) is not one of them.
 */
const NETWORK_CODES =
  /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|ETIMEDOUT|ESOCKETTIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|EHOSTDOWN|ENETUNREACH|ENETDOWN|EPIPE|UND_ERR_[A-Z_]+)$/;

/** A network failure's own words ("connect ECONNREFUSED 127.0.0.1:4599"), for messages. */
export function networkCause(error: unknown): string | null {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.test(code)) {
      return (current as Error).message || code;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}
