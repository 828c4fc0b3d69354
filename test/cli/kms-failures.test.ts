import { existsSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AWS_TRANSIENT_FAULTS, awsFault } from '../doubles/kms/aws.js';
import { GCP_TRANSIENT_FAULTS, type GcpCorruptibleField, gcpFault } from '../doubles/kms/gcp.js';
import { startDaemon } from '../helpers/daemon.js';
import {
  adopt,
  aws,
  BACKENDS,
  type Backend,
  counting,
  gcp,
  transit,
  useKmsDoubles,
  vaultWithConnection,
} from '../helpers/kms.js';

/**
 * A KMS that refuses (exit 6, key_error) or cannot answer now (exit 5, unavailable: down, throttled,
 * sealed), with its own words, and nothing written (see helpers/kms.ts).
 */
useKmsDoubles();

/** A vault with a connection, moved to `backend` and configured with it, as an operator's would be. */
async function vaultOnKms(backend: Backend) {
  const v = await vaultWithConnection();
  Object.assign(v.env, backend.env());
  expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
  v.env.CREDENTIAL_KMS_URI = backend.uri();
  return v;
}

describe.each(BACKENDS)('$kind key source', (backend) => {
  it('a move to the KMS that the KMS refuses changes nothing: all or nothing', async () => {
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    const dump = await v.dump();
    backend.deny();
    try {
      const refused = await v.cli(['key', 'rotate', '--to-kms', backend.uri()]);
      expect(refused.code).toBe(6);
      expect(refused.stderr).toMatch(backend.deniedText);
    } finally {
      backend.allow();
    }
    expect(await v.dump()).toBe(dump);
    expect(existsSync(join(v.home, 'master.key'))).toBe(true);
    const still = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(still.code, still.stderr).toBe(0);
  });

  it('exits 6 when the KMS refuses, 5 (retry later) when it is down or overloaded; writes nothing either way', async () => {
    const v = await vaultOnKms(backend);
    const app = await v.json<{ client_id: string }>(['apps', 'show', 'google-app']);
    const dump = await v.dump();

    // A refusal is about the key or the identity: a person must change something (exit 6).
    backend.deny();
    try {
      const denied = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
      expect(denied.code).toBe(6);
      expect(denied.stdout).toBe('');
      expect(denied.stderr).toMatch(backend.deniedText);
      const json = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], { secretOutput: true });
      expect(JSON.parse(json.stdout || json.stderr).error.code).toBe('key_error');
      // A write that needs a new data key stops before writing anything.
      const write = await adopt(v, app.client_id, '1112223334');
      expect(write.code).toBe(6);
      expect(write.stderr).toMatch(backend.deniedText);
      // key status reports the KMS's refusal, not a mismatch of the key with itself ("expected key id
      // X, got X"): the configured key is the vault's.
      const status = await v.cli(['key', 'status']);
      expect(status.code).toBe(6);
      expect(status.stderr).toMatch(backend.deniedText);
      expect(status.stderr).not.toContain('does not match this vault');
    } finally {
      backend.allow();
    }
    expect(await v.dump()).toBe(dump);

    if (backend.kind === 'gcp-kms') {
      // No Google credentials at all (no token, no ADC file under HOME, no metadata server here):
      // a key error (exit 6) with what to set, never a crash; --json's stderr is one JSON document.
      for (const args of [
        ['token', 'get', 'google_ads:1234567890', '--json'],
        ['key', 'status', '--json'],
      ]) {
        const none = await v.cli(args, {
          secretOutput: true,
          env: { GOOGLE_OAUTH_ACCESS_TOKEN: undefined },
          timeoutMs: 30_000,
        });
        expect(none.code, none.stderr).toBe(6);
        expect(JSON.parse(none.stderr).error).toMatchObject({
          code: 'key_error',
          message: expect.stringContaining('no Google credentials for Cloud KMS'),
        });
      }
    }

    // Out of reach, or saying it cannot serve now: the same command works later (exit 5, as a platform
    // that is down), and a script or the daemon's caller retries instead of paging someone about a key.
    for (const [fault, text] of [
      [
        (on: boolean) => backend.setDown(on),
        /is unreachable.*(ECONNRESET|socket hang up|other side closed|ECONNREFUSED|fetch failed)/i,
      ],
      [(on: boolean) => backend.setOverloaded(on), backend.overloadedText],
    ] as const) {
      fault(true);
      try {
        const down = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
        expect(down.code, down.stderr).toBe(5);
        expect(down.stdout).toBe('');
        expect(down.stderr).toMatch(text);
        expect(down.stderr).toMatch(/try again|Unseal/i);
        const json = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], { secretOutput: true });
        expect(JSON.parse(json.stderr).error.code).toBe('unavailable');
        const write = await adopt(v, app.client_id, '1112223334');
        expect(write.code, write.stderr).toBe(5);
      } finally {
        fault(false);
      }
      expect(await v.dump()).toBe(dump);
    }

    const recovered = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(recovered.code, recovered.stderr).toBe(0);
  });
});

describe('which KMS answers mean "retry later"', () => {
  it('AWS: throttling, internal errors, dependency timeouts and an unavailable key store are exit 5; a disabled or deleted key exit 6', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'aws-kms')!;
    const v = await vaultOnKms(backend);
    const dump = await v.dump();
    for (const type of Object.keys(AWS_TRANSIENT_FAULTS) as Array<keyof typeof AWS_TRANSIENT_FAULTS>) {
      aws.fault = awsFault(type);
      try {
        const got = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], { secretOutput: true });
        expect(got.code, `${type}: ${got.stderr}`).toBe(5);
        expect(JSON.parse(got.stderr).error).toMatchObject({
          code: 'unavailable',
          message: expect.stringContaining(`${type}: ${AWS_TRANSIENT_FAULTS[type].message}`),
        });
      } finally {
        aws.fault = null;
      }
    }
    for (const [change, undo, name] of [
      [() => aws.disable('alias/credvault'), () => aws.enable('alias/credvault'), 'DisabledException'],
      [
        () => aws.scheduleDeletion('alias/credvault'),
        () => aws.enable('alias/credvault'),
        'KMSInvalidStateException',
      ],
    ] as const) {
      change();
      try {
        const got = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], { secretOutput: true });
        expect(got.code, got.stderr).toBe(6);
        expect(JSON.parse(got.stderr).error.message).toContain(name);
      } finally {
        undo();
      }
    }
    expect(await v.dump()).toBe(dump);
  });

  it('Cloud KMS: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL are exit 5', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'gcp-kms')!;
    const v = await vaultOnKms(backend);
    const dump = await v.dump();
    for (const status of Object.keys(GCP_TRANSIENT_FAULTS) as Array<keyof typeof GCP_TRANSIENT_FAULTS>) {
      gcp.fault = gcpFault(status);
      try {
        const got = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], { secretOutput: true });
        expect(got.code, `${status}: ${got.stderr}`).toBe(5);
        expect(JSON.parse(got.stderr).error).toMatchObject({
          code: 'unavailable',
          message: expect.stringContaining(`${status}: ${GCP_TRANSIENT_FAULTS[status].message}`),
        });
      } finally {
        gcp.fault = null;
      }
    }
    expect(await v.dump()).toBe(dump);
  });

  it('AWS: a wrong secret or a temporary key without its session token is refused by KMS (exit 6, with what to check)', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'aws-kms')!;
    const v = await vaultOnKms(backend);
    const dump = await v.dump();

    const wrongSecret = await v.cli(['token', 'get', 'google_ads:1234567890'], {
      secretOutput: true,
      env: { AWS_SECRET_ACCESS_KEY: `${aws.secretAccessKey.slice(1)}x` },
    });
    expect(wrongSecret.code, wrongSecret.stderr).toBe(6);
    expect(wrongSecret.stderr).toContain(
      '(HTTP 400): InvalidSignatureException: The request signature we calculated does not match the signature you provided.',
    );
    expect(wrongSecret.stderr).toContain('Check the AWS secret access key');

    const temporary = aws.addAccessKey('ASIATEMPORARYKEY0001', { secretAccessKey: 'temporary-secret' });
    const temporaryEnv = {
      AWS_ACCESS_KEY_ID: temporary.accessKeyId,
      AWS_SECRET_ACCESS_KEY: temporary.secretAccessKey,
    };
    const noToken = await v.cli(['token', 'get', 'google_ads:1234567890', '--json'], {
      secretOutput: true,
      env: temporaryEnv,
    });
    expect(noToken.code, noToken.stderr).toBe(6);
    expect(JSON.parse(noToken.stderr).error).toMatchObject({
      code: 'key_error',
      message: expect.stringContaining(
        'UnrecognizedClientException: The security token included in the request is invalid.',
      ),
    });
    const hinted = await v.cli(['token', 'get', 'google_ads:1234567890'], {
      secretOutput: true,
      env: temporaryEnv,
    });
    expect(hinted.stderr).toContain('temporary ones (an ASIA… key id) need their AWS_SESSION_TOKEN too');
    expect(await v.dump()).toBe(dump);

    const withToken = await v.cli(['token', 'get', 'google_ads:1234567890'], {
      secretOutput: true,
      env: { ...temporaryEnv, AWS_SESSION_TOKEN: temporary.sessionToken! },
    });
    expect(withToken.code, withToken.stderr).toBe(0);
  });

  it('the daemon answers a sealed Vault with 503 and Retry-After, not a key error', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'vault-transit')!;
    const v = await vaultOnKms(backend);
    const { token } = await v.json<{ token: string }>(['clients', 'create', 'ci', '--all']);
    const daemon = await startDaemon(v);
    try {
      // A connection added after the daemon started: its data key is not yet unwrapped in the daemon.
      const app = await v.json<{ client_id: string }>(['apps', 'show', 'google-app']);
      expect((await adopt(v, app.client_id, '1112223334')).code).toBe(0);
      transit.sealed = true;
      try {
        const sealed = await daemon.get('/v1/connections/google_ads:1112223334/token', { token });
        expect(sealed.status, sealed.body).toBe(503);
        expect(sealed.json()).toMatchObject({ error: { code: 'unavailable' } });
        expect(sealed.json<{ error: { message: string } }>().error.message).toContain('Vault is sealed');
        expect(Number(sealed.headers['retry-after'])).toBeGreaterThan(0);
      } finally {
        transit.sealed = false;
      }
      const served = await daemon.get('/v1/connections/google_ads:1112223334/token', { token });
      expect(served.status, served.body).toBe(200);
    } finally {
      await daemon.stop();
    }
  });
});

describe("Vault's token", () => {
  it("is sent to the URI's host alone: a redirect to another address is refused (exit 6, naming it), and nothing is written", async () => {
    const listen = async (server: Server) => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return (server.address() as AddressInfo).port;
    };
    const caught: IncomingHttpHeaders[] = [];
    const elsewhere = createServer((req, res) => {
      caught.push(req.headers);
      res.writeHead(500).end('{"errors":["not Vault"]}');
    });
    const elsewherePort = await listen(elsewhere);
    // A proxy (or a standby without request forwarding) sending every request on to another address.
    const redirecting = createServer((req, res) => {
      res.writeHead(307, { location: `http://localhost:${elsewherePort}${req.url}` }).end();
    });
    const port = await listen(redirecting);
    try {
      const v = await vaultWithConnection();
      Object.assign(v.env, { VAULT_ADDR: `http://127.0.0.1:${port}`, VAULT_TOKEN: transit.token });
      const dump = await v.dump();
      const moved = await v.cli([
        'key',
        'rotate',
        '--to-kms',
        `vault-transit://127.0.0.1:${port}/transit/keys/credvault`,
      ]);
      expect(moved.code, moved.stderr).toBe(6);
      expect(moved.stderr).toContain(
        `Vault at http://127.0.0.1:${port} answered encrypt with Transit key credvault with a redirect (HTTP 307 to "http://localhost:${elsewherePort}/v1/transit/encrypt/credvault"); credvault sends the Vault token to no other address`,
      );
      expect(moved.stderr).toContain('a standby that forwards requests');
      expect(caught).toEqual([]);
      expect(await v.dump()).toBe(dump);
    } finally {
      await new Promise((resolve) => redirecting.close(resolve));
      await new Promise((resolve) => elsewhere.close(resolve));
    }
  });
});

describe('Cloud KMS answers damaged on the way', () => {
  it('are discarded: a rotation, a write and a read refuse them (exit 6, nothing written); one damaged answer is asked for again', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'gcp-kms')!;
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    const app = await v.json<{ client_id: string }>(['apps', 'show', 'google-app']);
    let dump = await v.dump();

    // A wrapped key whose bytes changed on the way would be stored, and found broken only when the
    // secrets it protects are next read.
    gcp.corrupt = { operation: 'encrypt', field: 'ciphertext' };
    try {
      const moved = await v.cli(['key', 'rotate', '--to-kms', backend.uri()]);
      expect(moved.code, moved.stderr).toBe(6);
      expect(moved.stderr).toContain(
        "Cloud KMS's answer to encrypt on projects/acme-ads/locations/europe-west1/keyRings/credvault/cryptoKeys/kek for data key",
      );
      expect(moved.stderr).toContain(
        'failed its integrity check twice (ciphertext_crc32c does not match the ciphertext); it was discarded',
      );
      expect(moved.stderr).toContain('Nothing was written.');
    } finally {
      gcp.corrupt = null;
    }
    expect(await v.dump()).toBe(dump);
    expect(existsSync(join(v.home, 'master.key'))).toBe(true);

    expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
    v.env.CREDENTIAL_KMS_URI = backend.uri();
    // A refused `connections add` has exchanged the refresh token at the platform already (its audit
    // row says the app's secret was used); what it must not leave is a data key, connection or grant.
    const stored = async () =>
      JSON.stringify([
        await v.sql('select id, wrapped_key, status from data_keys order by id'),
        await v.sql('select id from ad_account_connections order by id'),
        await v.sql('select id from oauth_tokens_vault order by id'),
      ]);
    const before = await stored();
    for (const [field, problem] of [
      ['verifiedPlaintextCrc32c', 'verified_plaintext_crc32c is not true'],
      [
        'verifiedAdditionalAuthenticatedDataCrc32c',
        'verified_additional_authenticated_data_crc32c is not true',
      ],
      ['ciphertextCrc32c', 'ciphertext_crc32c does not match the ciphertext'],
      ['name', 'it names the key version projects/elsewhere/'],
    ] as Array<[GcpCorruptibleField, string]>) {
      gcp.corrupt = { operation: 'encrypt', field };
      try {
        const write = await adopt(v, app.client_id, '1112223334');
        expect(write.code, `${field}: ${write.stderr}`).toBe(6);
        expect(write.stderr).toContain(problem);
      } finally {
        gcp.corrupt = null;
      }
    }
    expect(await stored()).toBe(before);
    dump = await v.dump();
    gcp.corrupt = { operation: 'decrypt', field: 'plaintext' };
    try {
      const read = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
      expect(read.code, read.stderr).toBe(6);
      expect(read.stdout).toBe('');
      expect(read.stderr).toContain('plaintext_crc32c does not match the plaintext');
    } finally {
      gcp.corrupt = null;
    }
    expect(await v.dump()).toBe(dump);

    // Once: the answer is discarded and asked for again.
    gcp.corrupt = { operation: 'decrypt', field: 'plaintext', times: 1 };
    try {
      const read = await counting(backend, () =>
        v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true }),
      );
      expect(read.result.code, read.result.stderr).toBe(0);
      expect(read.calls.filter((c) => c === 'decrypt')).toHaveLength(2);
    } finally {
      gcp.corrupt = null;
    }
  });
});

describe('a move to the KMS whose re-encryption the KMS stops', () => {
  it('says the rotation is done and how to go on (not "nothing was written", not `init`); going on finishes it', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'vault-transit')!;
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    // Re-wrapping to Vault only encrypts; re-encrypting first decrypts the re-wrapped data keys.
    transit.downOn = 'decrypt';
    let stopped: Awaited<ReturnType<typeof v.cli>>;
    try {
      stopped = await v.cli(['key', 'rotate', '--to-kms', backend.uri(), '--reencrypt']);
    } finally {
      transit.downOn = null;
      transit.down = false;
    }
    // Vault out of reach is a retry-later (exit 5), with what the rotation already did.
    expect(stopped.code).toBe(5);
    expect(stopped.stderr).toMatch(/is unreachable/);
    expect(stopped.stderr).toContain('The rotation itself is done');
    expect(stopped.stderr).toContain(`Set CREDENTIAL_KMS_URI=${backend.uri()}`);
    // The old master key was already moved aside as master.key.retired-…: nothing to remove first.
    expect(stopped.stderr).not.toContain('remove the old master key');
    expect(stopped.stderr).toContain('credvault key rotate --reencrypt');
    expect(stopped.stderr).not.toContain('nothing was written');
    // The vault answers to the KMS now: the local key is gone from the data folder.
    expect(existsSync(join(v.home, 'master.key'))).toBe(false);
    const kek = await v.sql<{ kek_kind: string }>(
      "select distinct kek_kind from data_keys where status = 'active'",
    );
    expect(kek.map((r) => r.kek_kind)).toContain('vault-transit');

    v.env.CREDENTIAL_KMS_URI = backend.uri();
    const resumed = await v.cli(['key', 'rotate', '--reencrypt', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const token = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);
  });
});
