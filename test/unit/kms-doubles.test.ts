import {
  DecryptCommand,
  DescribeKeyCommand,
  DisabledException,
  EncryptCommand,
  GenerateDataKeyCommand,
  IncorrectKeyException,
  InvalidCiphertextException,
  KMSClient,
  KMSInvalidStateException,
  KMSServiceException,
  NotFoundException,
} from '@aws-sdk/client-kms';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c as credvaultCrc32c } from '../../src/crypto/kms/gcp.js';
import { type AwsKmsDouble, startAwsKmsDouble } from '../doubles/kms/aws.js';
import { crc32c, type GcpKmsDouble, startGcpKmsDouble } from '../doubles/kms/gcp.js';
import { startVaultTransitDouble, type VaultTransitDouble } from '../doubles/kms/vault.js';

/** Runs `fn` and returns what it threw (fails the test when it did not throw). */
async function failure(fn: () => Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await fn();
  } catch (err) {
    return err as Error & Record<string, unknown>;
  }
  throw new Error('expected a failure');
}

describe('AWS KMS double with @aws-sdk/client-kms', () => {
  let double: AwsKmsDouble;
  let kms: KMSClient;
  let key: { keyId: string; arn: string };

  beforeAll(async () => {
    double = await startAwsKmsDouble({ region: 'eu-west-1' });
    key = double.createKey({ alias: 'credvault-test' });
    kms = new KMSClient({
      endpoint: double.url,
      region: double.region,
      credentials: { accessKeyId: double.accessKeyId, secretAccessKey: double.secretAccessKey },
      maxAttempts: 1,
    });
  });
  afterAll(async () => {
    kms.destroy();
    await double.close();
  });

  it('round-trips Encrypt/Decrypt by alias, key id and ARN; Decrypt needs no KeyId', async () => {
    const dataKey = Buffer.alloc(32, 7);
    const context = { purpose: 'credvault', tenant: 't1' };
    for (const keyId of [
      'alias/credvault-test',
      key.keyId,
      key.arn,
      `arn:aws:kms:eu-west-1:111122223333:alias/credvault-test`,
    ]) {
      const enc = await kms.send(
        new EncryptCommand({ KeyId: keyId, Plaintext: dataKey, EncryptionContext: context }),
      );
      expect(enc.KeyId).toBe(key.arn);
      expect(enc.EncryptionAlgorithm).toBe('SYMMETRIC_DEFAULT');
      expect(Buffer.from(enc.CiphertextBlob!).includes(dataKey)).toBe(false);
      // Context order does not matter, as in KMS.
      const dec = await kms.send(
        new DecryptCommand({
          CiphertextBlob: enc.CiphertextBlob,
          EncryptionContext: { tenant: 't1', purpose: 'credvault' },
        }),
      );
      expect(Buffer.from(dec.Plaintext!)).toEqual(dataKey);
      expect(dec.KeyId).toBe(key.arn);
    }
    const last = double.requests.at(-1)!;
    expect(last.operation).toBe('Decrypt');
    expect(last.keyId).toBeNull();
    expect(last.keyArn).toBe(key.arn);
    expect(last.headers['authorization']).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIA/);
    expect(last.headers['x-amz-target']).toBe('TrentService.Decrypt');
  });

  it('GenerateDataKey returns 32 bytes that Decrypt recovers', async () => {
    const context = { vault: 'v1' };
    const gen = await kms.send(
      new GenerateDataKeyCommand({ KeyId: key.keyId, KeySpec: 'AES_256', EncryptionContext: context }),
    );
    expect(gen.Plaintext).toHaveLength(32);
    expect(gen.KeyId).toBe(key.arn);
    const dec = await kms.send(
      new DecryptCommand({ CiphertextBlob: gen.CiphertextBlob, EncryptionContext: context, KeyId: key.arn }),
    );
    expect(Buffer.from(dec.Plaintext!)).toEqual(Buffer.from(gen.Plaintext!));
    const byCount = await kms.send(
      new GenerateDataKeyCommand({ KeyId: 'alias/credvault-test', NumberOfBytes: 32 }),
    );
    expect(byCount.Plaintext).toHaveLength(32);
  });

  it('refuses a different encryption context, another key, or a missing context', async () => {
    const enc = await kms.send(
      new EncryptCommand({ KeyId: key.arn, Plaintext: Buffer.alloc(32, 1), EncryptionContext: { a: '1' } }),
    );
    const contexts: Array<Record<string, string> | undefined> = [{ a: '2' }, { a: '1', b: '2' }, undefined];
    for (const EncryptionContext of contexts) {
      const err = await failure(() =>
        kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext })),
      );
      expect(err).toBeInstanceOf(InvalidCiphertextException);
    }
    const other = double.createKey();
    const wrongKey = await failure(() =>
      kms.send(
        new DecryptCommand({
          CiphertextBlob: enc.CiphertextBlob,
          EncryptionContext: { a: '1' },
          KeyId: other.keyId,
        }),
      ),
    );
    expect(wrongKey).toBeInstanceOf(IncorrectKeyException);
    const tampered = Buffer.from(enc.CiphertextBlob!);
    tampered[tampered.length - 1]! ^= 1;
    const err = await failure(() =>
      kms.send(new DecryptCommand({ CiphertextBlob: tampered, EncryptionContext: { a: '1' } })),
    );
    expect(err).toBeInstanceOf(InvalidCiphertextException);
  });

  it('maps deny, disable, pending deletion and unknown keys to the SDK exceptions', async () => {
    const k = double.createKey({ alias: 'denied' });
    const enc = await kms.send(new EncryptCommand({ KeyId: k.keyId, Plaintext: Buffer.alloc(32) }));

    double.deny('alias/denied', ['Decrypt']);
    const denied = await failure(() => kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })));
    // The KMS SDK models no AccessDeniedException class: it is a KMSServiceException named so.
    expect(denied).toBeInstanceOf(KMSServiceException);
    expect(denied.name).toBe('AccessDeniedException');
    expect(denied.$fault).toBe('client');
    expect(denied.message).toContain(`kms:Decrypt on resource: ${k.arn}`);
    await kms.send(new EncryptCommand({ KeyId: 'alias/denied', Plaintext: Buffer.alloc(32) }));
    double.allow('denied');
    await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }));

    double.disable(k.keyId);
    expect(
      await failure(() => kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob }))),
    ).toBeInstanceOf(DisabledException);
    const described = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/denied' }));
    expect(described.KeyMetadata).toMatchObject({
      KeyId: k.keyId,
      Arn: k.arn,
      KeyState: 'Disabled',
      Enabled: false,
    });
    double.scheduleDeletion(k.keyId);
    expect(
      await failure(() => kms.send(new EncryptCommand({ KeyId: k.keyId, Plaintext: Buffer.alloc(32) }))),
    ).toBeInstanceOf(KMSInvalidStateException);

    const missing = await failure(() =>
      kms.send(new EncryptCommand({ KeyId: 'alias/nope', Plaintext: Buffer.alloc(32) })),
    );
    expect(missing).toBeInstanceOf(NotFoundException);
    expect(missing.message).toBe('Alias arn:aws:kms:eu-west-1:111122223333:alias/nope is not found.');
  });

  it('DescribeKey answers KeyMetadata', async () => {
    const out = await kms.send(new DescribeKeyCommand({ KeyId: 'alias/credvault-test' }));
    expect(out.KeyMetadata).toMatchObject({
      KeyId: key.keyId,
      Arn: key.arn,
      KeyState: 'Enabled',
      Enabled: true,
    });
    expect(out.KeyMetadata!.CreationDate).toBeInstanceOf(Date);
  });

  it('keeps old ciphertexts decryptable after rotation', async () => {
    const k = double.createKey();
    const before = await kms.send(new EncryptCommand({ KeyId: k.keyId, Plaintext: Buffer.from('one') }));
    double.rotate(k.keyId);
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: before.CiphertextBlob }));
    expect(Buffer.from(dec.Plaintext!).toString()).toBe('one');
  });

  it('rejects unknown credentials and unsigned requests', async () => {
    const stranger = new KMSClient({
      endpoint: double.url,
      region: double.region,
      credentials: { accessKeyId: 'AKIAUNKNOWN000000000', secretAccessKey: 'x' },
      maxAttempts: 1,
    });
    const err = await failure(() => stranger.send(new DescribeKeyCommand({ KeyId: key.keyId })));
    expect(err.name).toBe('UnrecognizedClientException');
    expect(err.message).toBe('The security token included in the request is invalid.');
    stranger.destroy();

    const res = await fetch(double.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'TrentService.DescribeKey' },
      body: JSON.stringify({ KeyId: key.keyId }),
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({
      __type: 'MissingAuthenticationTokenException',
      message: 'Missing Authentication Token',
    });
    const bad = await fetch(double.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': 'TrentService.DescribeKey',
        authorization: `AWS4-HMAC-SHA256 Credential=${double.accessKeyId}/20260101/eu-west-1/kms/aws4_request`,
      },
      body: JSON.stringify({ KeyId: key.keyId }),
    });
    expect(((await bad.json()) as { __type: string }).__type).toBe('IncompleteSignatureException');
  });

  it('verifies the SigV4 signature with the secret it holds, and a temporary key needs its session token', async () => {
    const client = (credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }) =>
      new KMSClient({ endpoint: double.url, region: double.region, credentials, maxAttempts: 1 });
    const describe = async (kmsClient: KMSClient) => {
      try {
        return await failure(() => kmsClient.send(new DescribeKeyCommand({ KeyId: key.keyId })));
      } finally {
        kmsClient.destroy();
      }
    };

    // A known access key with the wrong secret: the signature does not verify.
    const wrongSecret = await describe(
      client({ accessKeyId: double.accessKeyId, secretAccessKey: `${double.secretAccessKey}x` }),
    );
    expect(wrongSecret.name).toBe('InvalidSignatureException');
    expect(wrongSecret.message).toBe(
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    );
    expect((wrongSecret.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(400);

    // Temporary credentials: without their session token, or with another, the key is not recognized.
    const temporary = double.addAccessKey('ASIAEXAMPLEEXAMPLE00');
    expect(temporary.sessionToken).toBeTruthy();
    const { sessionToken, ...withoutToken } = temporary;
    const noToken = await describe(client(withoutToken));
    expect(noToken.name).toBe('UnrecognizedClientException');
    expect(noToken.message).toBe('The security token included in the request is invalid.');
    expect((noToken.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(400);
    const otherToken = await describe(client({ ...temporary, sessionToken: `${sessionToken}x` }));
    expect(otherToken.name).toBe('UnrecognizedClientException');
    // A long-term key with a token it never had is not recognized either.
    const stray = await describe(
      client({ accessKeyId: double.accessKeyId, secretAccessKey: double.secretAccessKey, sessionToken: 'x' }),
    );
    expect(stray.name).toBe('UnrecognizedClientException');
    const withToken = client(temporary);
    const described = await withToken.send(new DescribeKeyCommand({ KeyId: key.keyId }));
    expect(described.KeyMetadata?.Arn).toBe(key.arn);
    withToken.destroy();
  });

  it('refuses a request signed more than 5 minutes from its clock, and the SDK corrects from its Date', async () => {
    const skewed = (offsetMs: number, maxAttempts = 1) =>
      new KMSClient({
        endpoint: double.url,
        region: double.region,
        credentials: { accessKeyId: double.accessKeyId, secretAccessKey: double.secretAccessKey },
        systemClockOffset: offsetMs,
        maxAttempts,
      });
    for (const [offset, pattern] of [
      [
        -6 * 60_000,
        /^Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 5 min\.\)$/,
      ],
      [
        6 * 60_000,
        /^Signature not yet current: \d{8}T\d{6}Z is still later than \d{8}T\d{6}Z \(\d{8}T\d{6}Z \+ 5 min\.\)$/,
      ],
    ] as const) {
      const kmsClient = skewed(offset);
      const err = await failure(() => kmsClient.send(new DescribeKeyCommand({ KeyId: key.keyId })));
      kmsClient.destroy();
      expect(err.name).toBe('InvalidSignatureException');
      expect(err.message).toMatch(pattern);
    }
    // Within the window: accepted.
    const close = skewed(-4 * 60_000);
    expect((await close.send(new DescribeKeyCommand({ KeyId: key.keyId }))).KeyMetadata?.Arn).toBe(key.arn);
    close.destroy();
    // With retries, the SDK reads the double's Date header, corrects its offset and signs again.
    const corrected = skewed(-10 * 60_000, 2);
    expect((await corrected.send(new DescribeKeyCommand({ KeyId: key.keyId }))).KeyMetadata?.Arn).toBe(
      key.arn,
    );
    corrected.destroy();
  });

  it('is unreachable while down', async () => {
    double.down = true;
    try {
      const err = await failure(() => kms.send(new DescribeKeyCommand({ KeyId: key.keyId })));
      // Not a service answer: no HTTP status. The SDK names a reset connection 'TimeoutError'.
      expect(err).not.toBeInstanceOf(KMSServiceException);
      expect((err.$metadata as { httpStatusCode?: number }).httpStatusCode).toBeUndefined();
      expect(err.code).toBe('ECONNRESET');
    } finally {
      double.down = false;
    }
    expect(double.requests.at(-1)!.operation).toBe('DescribeKey');
  });
});

const KEY = 'projects/credvault-test/locations/global/keyRings/ring/cryptoKeys/dek-wrap';

describe('CRC32C', () => {
  it("credvault's and the double's give the standard check value, and agree on any input", () => {
    // The CRC catalogue's check value for CRC-32C (Castagnoli): the checksum of "123456789".
    expect(credvaultCrc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(credvaultCrc32c(Buffer.alloc(0))).toBe(0);
    for (let n = 1; n < 200; n += 7) {
      const data = Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff));
      expect(credvaultCrc32c(data)).toBe(crc32c(data));
    }
  });
});

/**
 * What makes @google-cloud/kms 5 (google-gax 5) speak REST over plain http to the double: fallback mode,
 * protocol http, host + port, and an `authClient`. google-gax calls `authClient.fetch(url, init)` for
 * every request (getRequestHeaders alone is not enough), so this object supplies both.
 */
function gcpClient(double: GcpKmsDouble, token = double.token): KeyManagementServiceClient {
  const authClient = {
    getRequestHeaders: async () => new Headers({ authorization: `Bearer ${token}` }),
    fetch: (url: string | URL, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return fetch(url, { method: init.method, headers, body: init.body, signal: init.signal });
    },
  };
  return new KeyManagementServiceClient({
    fallback: true,
    protocol: 'http',
    apiEndpoint: '127.0.0.1',
    port: double.port,
    authClient: authClient as unknown as NonNullable<
      ConstructorParameters<typeof KeyManagementServiceClient>[0]
    >['authClient'],
  });
}

describe('Google Cloud KMS double with @google-cloud/kms (REST fallback)', () => {
  let double: GcpKmsDouble;
  let client: KeyManagementServiceClient;

  beforeAll(async () => {
    double = await startGcpKmsDouble();
    double.createKey(KEY);
    client = gcpClient(double);
  });
  afterAll(async () => {
    await client.close();
    await double.close();
  });

  it('round-trips encrypt/decrypt with AAD and CRC32C checks', async () => {
    const plaintext = Buffer.alloc(32, 9);
    const aad = Buffer.from('credvault:v1');
    const [enc] = await client.encrypt({
      name: KEY,
      plaintext,
      additionalAuthenticatedData: aad,
      plaintextCrc32c: { value: crc32c(plaintext) },
      additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
    });
    expect(enc.name).toBe(`${KEY}/cryptoKeyVersions/1`);
    expect(enc.verifiedPlaintextCrc32c).toBe(true);
    expect(enc.verifiedAdditionalAuthenticatedDataCrc32c).toBe(true);
    expect(enc.protectionLevel).toBe('SOFTWARE');
    const ciphertext = Buffer.from(enc.ciphertext as Uint8Array);
    expect(Number(enc.ciphertextCrc32c!.value)).toBe(crc32c(ciphertext));

    const sent = double.requests.at(-1)!;
    expect(sent.method).toBe('POST');
    expect(sent.path).toBe(`/v1/${KEY}:encrypt`);
    expect(sent.query.get('$alt')).toBe('json;enum-encoding=int');
    expect(sent.headers['authorization']).toBe(`Bearer ${double.token}`);
    expect(sent.headers['x-goog-request-params']).toBe(`name=${encodeURIComponent(KEY)}`);
    expect(sent.json).toEqual({
      plaintext: plaintext.toString('base64'),
      additionalAuthenticatedData: aad.toString('base64'),
      plaintextCrc32c: String(crc32c(plaintext)),
      additionalAuthenticatedDataCrc32c: String(crc32c(aad)),
    });

    const [dec] = await client.decrypt({ name: KEY, ciphertext, additionalAuthenticatedData: aad });
    expect(Buffer.from(dec.plaintext as Uint8Array)).toEqual(plaintext);
    expect(dec.usedPrimary).toBe(true);
    expect(Number(dec.plaintextCrc32c!.value)).toBe(crc32c(plaintext));
  });

  it('refuses another AAD with INVALID_ARGUMENT', async () => {
    const [enc] = await client.encrypt({
      name: KEY,
      plaintext: Buffer.alloc(32),
      additionalAuthenticatedData: Buffer.from('a'),
    });
    for (const aad of [Buffer.from('b'), undefined]) {
      const err = await failure(() =>
        client.decrypt({ name: KEY, ciphertext: enc.ciphertext, additionalAuthenticatedData: aad }),
      );
      expect(err.code).toBe(3);
      expect(err.message).toMatch(/^Decryption failed: /);
    }
  });

  it('answers PERMISSION_DENIED, NOT_FOUND and a bad checksum as Google does', async () => {
    double.deny(KEY, ['encrypt']);
    try {
      const err = await failure(() => client.encrypt({ name: KEY, plaintext: Buffer.alloc(32) }));
      expect(err.code).toBe(7);
      expect(err.message).toBe(
        `Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource '${KEY}' (or it may not exist).`,
      );
      expect(err.reason).toBe('IAM_PERMISSION_DENIED');
    } finally {
      double.allow(KEY);
    }
    const missing = await failure(() =>
      client.encrypt({ name: `${KEY}-missing`, plaintext: Buffer.alloc(32) }),
    );
    expect(missing.code).toBe(5);
    const badCrc = await failure(() =>
      client.encrypt({ name: KEY, plaintext: Buffer.alloc(32), plaintextCrc32c: { value: 1 } }),
    );
    expect(badCrc.code).toBe(3);
  });

  it('decrypts old versions after rotation', async () => {
    const name = `${KEY}-rotating`;
    double.createKey(name);
    const [enc] = await client.encrypt({ name, plaintext: Buffer.from('old') });
    expect(double.rotate(name)).toBe(`${name}/cryptoKeyVersions/2`);
    const [dec] = await client.decrypt({ name, ciphertext: enc.ciphertext });
    expect(Buffer.from(dec.plaintext as Uint8Array).toString()).toBe('old');
    expect(dec.usedPrimary).toBe(false);
    const [again] = await client.encrypt({ name, plaintext: Buffer.from('new') });
    expect(again.name).toBe(`${name}/cryptoKeyVersions/2`);
  });

  it('rejects a wrong bearer token with UNAUTHENTICATED', async () => {
    const stranger = gcpClient(double, 'ya29.not-a-token');
    const err = await failure(() => stranger.encrypt({ name: KEY, plaintext: Buffer.alloc(32) }));
    expect(err.code).toBe(16);
    await stranger.close();
  });

  it('with a google-auth-library client (the default GoogleAuth path) errors arrive as GaxiosError', async () => {
    // No auth option: the library builds a GoogleAuth from `credentials`; its client's token is preset so
    // nothing talks to Google. Requests then go through gaxios, which throws on HTTP errors itself.
    const viaGaxios = new KeyManagementServiceClient({
      fallback: true,
      protocol: 'http',
      apiEndpoint: '127.0.0.1',
      port: double.port,
      credentials: { type: 'authorized_user', client_id: 'id', client_secret: 'secret', refresh_token: 'r' },
    });
    const authClient = await viaGaxios.auth.getClient();
    authClient.setCredentials({ access_token: double.token, expiry_date: Date.now() + 3_600_000 });
    const [enc] = await viaGaxios.encrypt({ name: KEY, plaintext: Buffer.from('x') });
    expect(enc.name).toBe(`${KEY}/cryptoKeyVersions/1`);
    double.deny(KEY, ['decrypt']);
    try {
      const err = await failure(() => viaGaxios.decrypt({ name: KEY, ciphertext: enc.ciphertext }));
      expect(err.constructor.name).toBe('GaxiosError');
      // The HTTP status, not a gRPC code, in both `status` and `code`.
      expect(err.status).toBe(403);
      expect(err.code).toBe(403);
      expect(JSON.parse(err.message)).toMatchObject({ error: { code: 403, status: 'PERMISSION_DENIED' } });
    } finally {
      double.allow(KEY);
    }
    await viaGaxios.close();
  });

  it('is unreachable while down', async () => {
    double.down = true;
    try {
      const err = await failure(() => client.encrypt({ name: KEY, plaintext: Buffer.alloc(32) }));
      expect(err.code).toBeUndefined();
      expect(err.message).toMatch(/fetch failed|socket hang up|ECONNRESET/);
    } finally {
      double.down = false;
    }
  });
});

describe('Vault Transit double over fetch', () => {
  let double: VaultTransitDouble;

  beforeAll(async () => {
    double = await startVaultTransitDouble();
    double.createKey('credvault');
    double.createKey('scoped', { namespace: 'team-a' });
  });
  afterAll(async () => {
    await double.close();
  });

  async function vault(path: string, body: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${double.url}/v1/${double.mount}/${path}`, {
      method: 'POST',
      headers: { 'x-vault-token': double.token, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    return {
      status: res.status,
      body: (await res.json()) as {
        data?: Record<string, unknown>;
        errors?: string[];
        warnings?: string[] | null;
      },
    };
  }

  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

  it('round-trips encrypt/decrypt with associated data and refuses another', async () => {
    const plaintext = Buffer.alloc(32, 3);
    const enc = await vault('encrypt/credvault', {
      plaintext: b64(plaintext),
      associated_data: b64('row-1'),
    });
    expect(enc.status).toBe(200);
    expect(enc.body.data).toMatchObject({ key_version: 1 });
    const ciphertext = enc.body.data!['ciphertext'] as string;
    expect(ciphertext).toMatch(/^vault:v1:[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(ciphertext.slice('vault:v1:'.length), 'base64')).toHaveLength(12 + 32 + 16);

    const dec = await vault('decrypt/credvault', { ciphertext, associated_data: b64('row-1') });
    expect(Buffer.from(dec.body.data!['plaintext'] as string, 'base64')).toEqual(plaintext);

    for (const associated_data of [b64('row-2'), undefined]) {
      const bad = await vault('decrypt/credvault', { ciphertext, associated_data });
      expect(bad).toEqual({ status: 400, body: { errors: ['cipher: message authentication failed'] } });
    }
    expect((await vault('decrypt/credvault', { ciphertext: 'AAAA' })).body.errors).toEqual([
      'invalid ciphertext: no prefix',
    ]);
    expect((await vault('encrypt/credvault', { plaintext: 'not base64!' })).body.errors).toEqual([
      'illegal base64 data at input byte 3',
    ]);
  });

  it('datakey/plaintext returns a 256-bit key whose ciphertext decrypts (associated_data is ignored)', async () => {
    const res = await vault('datakey/plaintext/credvault', { bits: 256, associated_data: b64('ignored') });
    expect(res.status).toBe(200);
    expect(res.body.warnings).toEqual(['Endpoint ignored these unrecognized parameters: [associated_data]']);
    const dataKey = Buffer.from(res.body.data!['plaintext'] as string, 'base64');
    expect(dataKey).toHaveLength(32);
    const dec = await vault('decrypt/credvault', { ciphertext: res.body.data!['ciphertext'] });
    expect(Buffer.from(dec.body.data!['plaintext'] as string, 'base64')).toEqual(dataKey);
    expect((await vault('datakey/plaintext/credvault', { bits: 100 })).body.errors).toEqual([
      'invalid bit length',
    ]);
  });

  it('rotate adds a version; old ciphertexts decrypt; rewrap moves them to the newest', async () => {
    double.createKey('rotating');
    const v1 = (await vault('encrypt/rotating', { plaintext: b64('secret') })).body.data![
      'ciphertext'
    ] as string;
    const rotated = await vault('keys/rotating/rotate', {});
    expect(rotated.status).toBe(200);
    expect(rotated.body.data).toMatchObject({ latest_version: 2, type: 'aes256-gcm96' });
    const old = await vault('decrypt/rotating', { ciphertext: v1 });
    expect(Buffer.from(old.body.data!['plaintext'] as string, 'base64').toString()).toBe('secret');
    const rewrapped = await vault('rewrap/rotating', { ciphertext: v1 });
    expect(rewrapped.body.data).toMatchObject({ key_version: 2 });
    const v2 = rewrapped.body.data!['ciphertext'] as string;
    expect(v2).toMatch(/^vault:v2:/);
    const dec = await vault('decrypt/rotating', { ciphertext: v2 });
    expect(Buffer.from(dec.body.data!['plaintext'] as string, 'base64').toString()).toBe('secret');
    double.setMinDecryptionVersion('rotating', 2);
    expect((await vault('decrypt/rotating', { ciphertext: v1 })).body.errors).toEqual([
      'ciphertext or signature version is disallowed by policy (too old)',
    ]);
  });

  it('rewrap does not take associated_data, as in Vault', async () => {
    const withAad = (await vault('encrypt/credvault', { plaintext: b64('x'), associated_data: b64('a') }))
      .body.data!['ciphertext'];
    const res = await vault('rewrap/credvault', { ciphertext: withAad, associated_data: b64('a') });
    expect(res).toEqual({ status: 400, body: { errors: ['cipher: message authentication failed'] } });
  });

  it('keeps keys per namespace', async () => {
    const inRoot = await vault('encrypt/scoped', { plaintext: b64('x') });
    expect(inRoot).toEqual({ status: 400, body: { errors: ['encryption key not found'] } });
    const inOther = await vault('encrypt/scoped', { plaintext: b64('x') }, { 'x-vault-namespace': 'team-b' });
    expect(inOther.body.errors).toEqual(['encryption key not found']);
    const enc = await vault('encrypt/scoped', { plaintext: b64('x') }, { 'x-vault-namespace': 'team-a/' });
    expect(enc.status).toBe(200);
    const dec = await vault(
      'decrypt/scoped',
      { ciphertext: enc.body.data!['ciphertext'] },
      { 'x-vault-namespace': 'team-a' },
    );
    expect(dec.status).toBe(200);
    expect(double.requests.at(-1)).toMatchObject({
      namespace: 'team-a',
      operation: 'decrypt',
      name: 'scoped',
    });
  });

  it('requires a token and honours deny', async () => {
    const noToken = await fetch(`${double.url}/v1/transit/encrypt/credvault`, {
      method: 'POST',
      body: JSON.stringify({ plaintext: b64('x') }),
    });
    expect(noToken.status).toBe(403);
    expect(await noToken.json()).toEqual({ errors: ['permission denied'] });
    expect(
      (await vault('encrypt/credvault', { plaintext: b64('x') }, { 'x-vault-token': 'hvs.wrong' })).status,
    ).toBe(403);
    double.deny('credvault');
    try {
      expect(await vault('encrypt/credvault', { plaintext: b64('x') })).toEqual({
        status: 403,
        body: { errors: ['permission denied'] },
      });
    } finally {
      double.allow('credvault');
    }
  });

  it('is unreachable while down', async () => {
    double.down = true;
    try {
      await expect(vault('encrypt/credvault', { plaintext: b64('x') })).rejects.toThrow(/fetch failed/);
    } finally {
      double.down = false;
    }
  });
});
