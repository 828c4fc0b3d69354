import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adopt, BACKENDS, transit, useKmsDoubles, vaultWithConnection } from '../helpers/kms.js';

/** A KMS that refuses or is down: exit 6 with its own words, and nothing written (see helpers/kms.ts). */
useKmsDoubles();

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

  it('exits 6 with the KMS own error when it refuses or is down, and writes nothing', async () => {
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
    v.env.CREDENTIAL_KMS_URI = backend.uri();
    const app = await v.json<{ client_id: string }>(['apps', 'show', 'google-app']);
    const dump = await v.dump();

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
    } finally {
      backend.allow();
    }
    expect(await v.dump()).toBe(dump);

    backend.setDown(true);
    try {
      const down = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
      expect(down.code).toBe(6);
      expect(down.stderr).toMatch(/is unreachable/);
      expect(down.stderr).toMatch(/ECONNRESET|socket hang up|other side closed|ECONNREFUSED|fetch failed/i);
      const write = await adopt(v, app.client_id, '1112223334');
      expect(write.code).toBe(6);
    } finally {
      backend.setDown(false);
    }
    expect(await v.dump()).toBe(dump);

    const recovered = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(recovered.code, recovered.stderr).toBe(0);
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
    expect(stopped.code).toBe(6);
    expect(stopped.stderr).toMatch(/is unreachable/);
    expect(stopped.stderr).toContain('The rotation itself is done');
    expect(stopped.stderr).toContain(`Set CREDENTIAL_KMS_URI=${backend.uri()}`);
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
