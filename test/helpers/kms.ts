import { afterAll, afterEach, beforeAll } from 'vitest';
import { type Double, GOOGLE_ADWORDS_SCOPE, type GoogleDouble, startGoogleDouble } from '../doubles/index.js';
import { type AwsKmsDouble, awsFault, startAwsKmsDouble } from '../doubles/kms/aws.js';
import { type GcpKmsDouble, gcpFault, startGcpKmsDouble } from '../doubles/kms/gcp.js';
import { startVaultTransitDouble, type VaultTransitDouble } from '../doubles/kms/vault.js';
import { addAppFor } from './flows.js';
import { createVault, type TestVault } from './vault.js';

/**
 * The three KMS key sources' test setting: a local server per service speaking its wire protocol (AWS
 * KMS's JSON 1.1 with SigV4, Cloud KMS's REST, Vault Transit's HTTP API), started for the calling test
 * file, and a Google Ads double for the connections whose secrets they protect. No real cloud KMS is
 * reachable here.
 */

export let google: GoogleDouble;
export let aws: AwsKmsDouble;
export let gcp: GcpKmsDouble;
export let transit: VaultTransitDouble;
export const GCP_KEY = 'projects/acme-ads/locations/europe-west1/keyRings/credvault/cryptoKeys/kek';

/** Starts the doubles before the file's tests and destroys its vaults after each. */
export function useKmsDoubles(): void {
  beforeAll(async () => {
    [google, aws, gcp, transit] = await Promise.all([
      startGoogleDouble(),
      startAwsKmsDouble({ region: 'eu-west-1' }),
      startGcpKmsDouble(),
      startVaultTransitDouble(),
    ]);
    aws.createKey({ alias: 'credvault' });
    gcp.createKey(GCP_KEY);
    transit.createKey('credvault');
  });
  afterAll(async () => {
    await Promise.all([google.close(), aws.close(), gcp.close(), transit.close()]);
  });

  afterEach(async () => {
    await Promise.all(vaults.splice(0).map((v) => v.destroy()));
  });
}

export const vaults: TestVault[] = [];

export interface Backend {
  kind: 'aws-kms' | 'gcp-kms' | 'vault-transit';
  uri: () => string;
  /** Credentials and endpoint, as a deployment would set them. */
  env: () => Record<string, string>;
  /** The KMS calls seen so far, by operation name. */
  calls: () => string[];
  unwrapOp: string;
  newKeyOp: string;
  deny: () => void;
  allow: () => void;
  setDown: (down: boolean) => void;
  /** The KMS answers that it cannot serve now: AWS throttles, Cloud KMS is UNAVAILABLE, Vault is sealed. */
  setOverloaded: (overloaded: boolean) => void;
  /** What the KMS itself says when it refuses. */
  deniedText: RegExp;
  /** What it says when it cannot serve now. */
  overloadedText: RegExp;
}

export const BACKENDS: Backend[] = [
  {
    kind: 'aws-kms',
    uri: () => 'aws-kms://alias/credvault',
    env: () => ({
      AWS_REGION: aws.region,
      AWS_ENDPOINT_URL_KMS: aws.url,
      AWS_ACCESS_KEY_ID: aws.accessKeyId,
      AWS_SECRET_ACCESS_KEY: aws.secretAccessKey,
    }),
    calls: () => aws.requests.map((r) => r.operation ?? '?'),
    unwrapOp: 'Decrypt',
    newKeyOp: 'GenerateDataKey',
    deny: () => aws.deny('alias/credvault'),
    allow: () => aws.allow('alias/credvault'),
    setDown: (down) => {
      aws.down = down;
    },
    setOverloaded: (overloaded) => {
      aws.fault = overloaded ? awsFault('ThrottlingException') : null;
    },
    deniedText: /AccessDeniedException/,
    overloadedText: /ThrottlingException: You have exceeded the rate at which you may call KMS/,
  },
  {
    kind: 'gcp-kms',
    uri: () => `gcp-kms://${GCP_KEY}`,
    env: () => ({ CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS: gcp.url, GOOGLE_OAUTH_ACCESS_TOKEN: gcp.token }),
    calls: () => gcp.requests.map((r) => r.operation ?? '?'),
    unwrapOp: 'decrypt',
    newKeyOp: 'encrypt',
    deny: () => gcp.deny(GCP_KEY),
    allow: () => gcp.allow(GCP_KEY),
    setDown: (down) => {
      gcp.down = down;
    },
    setOverloaded: (overloaded) => {
      gcp.fault = overloaded ? gcpFault('UNAVAILABLE') : null;
    },
    deniedText: /PERMISSION_DENIED/,
    overloadedText: /UNAVAILABLE: The service is currently unavailable/,
  },
  {
    kind: 'vault-transit',
    uri: () => `vault-transit://${new URL(transit.url).host}/transit/keys/credvault`,
    env: () => ({ VAULT_ADDR: transit.url, VAULT_TOKEN: transit.token }),
    calls: () => transit.requests.map((r) => r.operation ?? '?'),
    unwrapOp: 'decrypt',
    newKeyOp: 'datakey',
    deny: () => transit.deny('credvault'),
    allow: () => transit.allow('credvault'),
    setDown: (down) => {
      transit.down = down;
    },
    setOverloaded: (overloaded) => {
      transit.sealed = overloaded;
    },
    deniedText: /permission denied/,
    overloadedText: /\(HTTP 503\): Vault is sealed/,
  },
];

/** A vault with one Google Ads connection whose refresh token the double issued. */
export async function vaultWithConnection(account = '1234567890'): Promise<TestVault> {
  const v = await createVault();
  vaults.push(v);
  const app = await addAppFor(v, 'google_ads', google as unknown as Double<unknown, unknown>);
  await adopt(v, app.clientId, account);
  return v;
}

export async function adopt(v: TestVault, clientId: string, account: string) {
  const grant = google.issueGrant({ clientId, scope: GOOGLE_ADWORDS_SCOPE });
  const added = await v.cli(
    [
      'connections',
      'add',
      'google_ads',
      '--app',
      'google-app',
      '--account',
      account,
      '--refresh-token-file',
      '-',
    ],
    { input: grant.refreshToken },
  );
  return added;
}

/** The KMS calls `fn` caused. */
export async function counting<T>(
  backend: Backend,
  fn: () => Promise<T>,
): Promise<{ result: T; calls: string[] }> {
  const before = backend.calls().length;
  const result = await fn();
  return { result, calls: backend.calls().slice(before) };
}
