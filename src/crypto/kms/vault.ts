import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KeyError, quoted, UnavailableError } from '../../errors.js';
import { quotableUrl } from '../../util/net.js';
import type { KeySource, WrapContext } from '../key-source.js';
import { KmsUriError, kmsKeyId, networkCause } from '../kms.js';

const SCHEME = 'vault-transit://';
const TIMEOUT_MS = 15_000;

/**
 * HashiCorp Vault's Transit secrets engine over its HTTP API: `datakey/plaintext` for new data keys,
 * `encrypt` to wrap an existing one, `decrypt`, and `rewrap` (after the Transit key was rotated, the
 * wrapped keys move to its newest version without leaving Vault). Token: VAULT_TOKEN, else
 * ~/.vault-token as the vault CLI leaves it; namespace: VAULT_NAMESPACE.
 *
 * Transit's `datakey` and `rewrap` ignore associated data, so wrapped keys are not bound to their row
 * here as they are with the other key sources; each secret's own associated data (which names its
 * data key) still makes a swapped wrapped key fail to decrypt anything.
 *
 * `vault-transit://HOST[:PORT]/MOUNT/keys/NAME`: https, unless VAULT_ADDR names the same host with
 * http:// (a dev server), or the URI says `?tls=false`.
 */
export function openVaultTransit(uri: string, env: NodeJS.ProcessEnv): KeySource {
  let url: URL;
  try {
    url = new URL(`http://${uri.slice(SCHEME.length)}`);
  } catch {
    throw invalidUri(uri);
  }
  const match = /^\/(.+)\/keys\/([^/]+)$/.exec(url.pathname);
  if (!url.host || !match) throw invalidUri(uri);
  const [, mount, name] = match as unknown as [string, string, string];
  let scheme = 'https:';
  if (url.searchParams.get('tls') === 'false') scheme = 'http:';
  else if (env.VAULT_ADDR) {
    try {
      const addr = new URL(env.VAULT_ADDR);
      if (addr.host === url.host) scheme = addr.protocol;
    } catch {
      throw new KeyError(`VAULT_ADDR ${quoted(quotableUrl(env.VAULT_ADDR))} is not a URL`);
    }
  }
  const base = `${scheme}//${url.host}/v1/${mount}`;
  return new VaultTransitKeySource(
    base,
    decodeURIComponent(name),
    env,
    `vault-transit://${url.host}/${mount}/keys/${name}`,
  );
}

function invalidUri(uri: string): KmsUriError {
  return new KmsUriError(
    uri,
    'is not a Vault Transit key',
    'Use vault-transit://HOST[:PORT]/MOUNT/keys/NAME, for example vault-transit://vault.internal:8200/transit/keys/credvault.',
  );
}

function vaultToken(env: NodeJS.ProcessEnv): string {
  const fromEnv = env.VAULT_TOKEN?.trim();
  if (fromEnv) return fromEnv;
  try {
    const fromFile = readFileSync(join(env.HOME ?? homedir(), '.vault-token'), 'utf8').trim();
    if (fromFile) return fromFile;
  } catch {
    // No token file: say what to set.
  }
  throw new KeyError('no Vault token for the Transit key source', {
    hint: 'Set VAULT_TOKEN (or log in with `vault login`, which writes ~/.vault-token).',
  });
}

class VaultTransitKeySource implements KeySource {
  readonly kind = 'vault-transit' as const;
  readonly origin: string;
  readonly keyId: string;
  readonly #base: string;
  readonly #name: string;
  readonly #env: NodeJS.ProcessEnv;
  #token: string | null = null;

  constructor(base: string, name: string, env: NodeJS.ProcessEnv, origin: string) {
    this.#base = base;
    this.#name = name;
    this.#env = env;
    this.origin = origin;
    // The key's identity is Vault's address, mount and key name, and the namespace: the same path in
    // another namespace is another key.
    this.keyId = kmsKeyId('vault-transit', `${origin}#${env.VAULT_NAMESPACE ?? ''}`);
  }

  async generateDataKey(context: WrapContext): Promise<{ key: Buffer; wrapped: string }> {
    const data = await this.#post('datakey/plaintext', context, { bits: 256 });
    return { key: decode(data.plaintext, 'plaintext'), wrapped: text(data.ciphertext, 'ciphertext') };
  }

  async wrap(dataKey: Buffer, context: WrapContext): Promise<string> {
    const data = await this.#post('encrypt', context, { plaintext: dataKey.toString('base64') });
    return text(data.ciphertext, 'ciphertext');
  }

  async unwrap(wrapped: string, context: WrapContext): Promise<Buffer> {
    if (!wrapped.startsWith('vault:v')) {
      throw new KeyError(`data key ${context.dataKeyId} was not wrapped by Vault Transit`, {
        hint: 'See `credvault key status` for the key that wrapped it.',
      });
    }
    const data = await this.#post('decrypt', context, { ciphertext: wrapped });
    return decode(data.plaintext, 'plaintext');
  }

  async rewrap(wrapped: string, context: WrapContext): Promise<string> {
    const data = await this.#post('rewrap', context, { ciphertext: wrapped });
    return text(data.ciphertext, 'ciphertext');
  }

  async #post(
    operation: string,
    context: WrapContext,
    body: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    this.#token ??= vaultToken(this.#env);
    const url = `${this.#base}/${operation}/${encodeURIComponent(this.#name)}`;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'x-vault-token': this.#token,
      'x-vault-request': 'true',
    };
    if (this.#env.VAULT_NAMESPACE) headers['x-vault-namespace'] = this.#env.VAULT_NAMESPACE;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
        // fetch would follow a redirect with X-Vault-Token (it drops only Authorization on another
        // origin), to any host and from https to plain http. The token goes to the URI's host alone.
        redirect: 'manual',
      });
    } catch (error) {
      const cause =
        (error as Error).name === 'TimeoutError'
          ? `no answer in ${TIMEOUT_MS / 1000}s`
          : (networkCause(error) ?? (error as Error).message);
      throw new UnavailableError(
        `Vault is unreachable (${operation} with Transit key ${this.#name}): ${cause}`,
        {
          hint: `Check that Vault at ${this.#base.replace(/\/v1\/.*$/, '')} is up and unsealed; nothing was written.`,
          cause: error,
        },
      );
    }
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      const location = response.headers.get('location');
      throw new KeyError(
        `Vault at ${new URL(this.#base).origin} answered ${operation} with Transit key ${this.#name} with a redirect (HTTP ${response.status}${location ? ` to ${quoted(quotableUrl(location))}` : ''}); credvault sends the Vault token to no other address`,
        {
          hint: `Name in the key's URI (${this.origin}) a Vault address that answers itself: the active node, a standby that forwards requests (Vault's default), or their load balancer; nothing was written.`,
        },
      );
    }
    const raw = await response.text();
    let json: { data?: Record<string, unknown>; errors?: unknown[] } = {};
    try {
      json = raw ? JSON.parse(raw) : {};
    } catch {
      // An answer that is not Vault's JSON (a proxy's error page): reported by status below.
    }
    if (!response.ok || !json.data) {
      const errors =
        Array.isArray(json.errors) && json.errors.length
          ? json.errors.map(String).join('; ')
          : raw.slice(0, 200) || 'no detail';
      const what = `${operation} with Transit key ${this.#name} for data key ${context.dataKeyId} (HTTP ${response.status}): ${errors}`;
      if (transient(response.status)) {
        const retryAfter = Number(response.headers.get('retry-after'));
        throw new UnavailableError(`Vault could not answer ${what}`, {
          hint:
            response.status === 503
              ? 'Vault is sealed or in maintenance: unseal it (or wait for it), then try again; nothing was written.'
              : 'Try again later: Vault could not answer now; nothing was written.',
          retryAfter: Number.isInteger(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
        });
      }
      throw new KeyError(`Vault refused ${what}`, { hint: vaultHint(response.status, errors) });
    }
    return json.data;
  }
}

/**
 * What Vault's API documentation says to retry: 429 (a rate limit quota, with Retry-After), 500 ("an
 * internal error has occurred, try again later"), 502 (a third party Vault called failed), 503
 * ("down for maintenance or currently sealed"). Every other status is Vault refusing the request.
 */
function transient(status: number): boolean {
  return status === 429 || status >= 500;
}

function vaultHint(status: number, errors: string): string | undefined {
  if (status === 403)
    return 'The Vault token lacks a policy allowing this path (update on transit/encrypt, decrypt, datakey, rewrap), or it expired.';
  if (/not found/i.test(errors))
    return 'Create the key (`vault write -f transit/keys/NAME`) or fix the key name in CREDENTIAL_KMS_URI.';
  return undefined;
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string' || !value) throw new KeyError(`Vault's answer lacks ${field}`);
  return value;
}

function decode(value: unknown, field: string): Buffer {
  return Buffer.from(text(value, field), 'base64');
}
