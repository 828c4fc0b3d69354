import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { LocalKeySource } from '../../src/crypto/local-key.js';
import { oauthAppCredentials, oauthTokensVault } from '../../src/db/schema/index.js';
import { secretSlot } from '../../src/services/apps.js';
import { openContext } from '../../src/services/context.js';
import { openToken } from '../../src/services/grants.js';
import { type Double, GOOGLE_ADWORDS_SCOPE, type GoogleDouble, startGoogleDouble } from '../doubles/index.js';
import { seedConnections, startDaemon } from '../helpers/daemon.js';
import { startDbProxy } from '../helpers/db-proxy.js';
import { addAppFor } from '../helpers/flows.js';
import { createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';

let google: GoogleDouble;
beforeAll(async () => {
  google = await startGoogleDouble();
});
afterAll(() => google.close());

const vaults: TestVault[] = [];
afterEach(async () => {
  await Promise.all(vaults.splice(0).map((v) => v.destroy()));
});

/** A vault holding 1,000 token secrets (500 grants) and an app's two secrets. */
async function vaultWithSecrets(grants = 500) {
  const v = await createVault();
  vaults.push(v);
  const app = await addAppFor(v, 'google_ads', google as unknown as Double<unknown, unknown>);
  const tokens = await seedConnections(
    v,
    google as unknown as Double<unknown, unknown>,
    'google-app',
    app.clientId,
    GOOGLE_ADWORDS_SCOPE,
    grants,
    3600,
  );
  return { v, app, tokens, secrets: [...tokens, app.clientSecret, app.developerToken!] };
}

/** Every secret in the vault, decrypted through credvault's own code with the key `v` is configured with. */
async function decryptAll(v: TestVault): Promise<string[]> {
  const ctx = await openContext(resolveConfig({}, { ...v.env } as NodeJS.ProcessEnv), { name: 'test-check' });
  try {
    const out: string[] = [];
    const keyring = await ctx.keyring();
    for (const app of await ctx.db.select().from(oauthAppCredentials)) {
      for (const column of ['client_secret_enc', 'developer_token_enc'] as const) {
        const stored = column === 'client_secret_enc' ? app.clientSecretEnc : app.developerTokenEnc;
        const secret = await keyring.decryptOptional(stored, secretSlot(app.id, column));
        if (secret) out.push(secret.reveal());
      }
    }
    for (const grant of await ctx.db.select().from(oauthTokensVault)) {
      for (const which of ['access', 'refresh'] as const) {
        const secret = await openToken(ctx, grant, which);
        if (secret) out.push(secret.reveal());
      }
    }
    return out.sort();
  } finally {
    await ctx.close();
  }
}

/**
 * `count` more grant data keys, wrapped by credvault's own code with `source` and written straight
 * into the table (far faster than as many grants); `broken` stores each with one character changed.
 */
async function addDataKeys(v: TestVault, source: LocalKeySource, count: number, { broken = false } = {}) {
  const keys = Array.from({ length: count }, () => ({ id: randomUUID(), key: randomBytes(32) }));
  const rows = keys.map((k) => {
    const wrapped = source.wrapSync(k.key, { dataKeyId: k.id });
    const flipped = wrapped[10] === 'A' ? 'B' : 'A';
    return { id: k.id, wrapped: broken ? `${wrapped.slice(0, 10)}${flipped}${wrapped.slice(11)}` : wrapped };
  });
  await v.sql(
    `insert into data_keys (id, scope, wrapped_key, kek_id, kek_kind)
     select id, 'grant', wrapped, $2, 'local' from json_to_recordset($1::text::json) as r(id uuid, wrapped text)`,
    [JSON.stringify(rows), source.keyId],
  );
  return keys;
}

/**
 * The ids of the seeded connections, the one to account `seed-N` at index N (connection refs for the
 * CLI and the daemon), read in one statement.
 */
async function seededIds(v: TestVault): Promise<string[]> {
  const rows = await v.sql<{ id: string }>(
    `select id from ad_account_connections where external_account_id like 'seed-%'
     order by substr(external_account_id, 6)::int`,
  );
  return rows.map((row) => row.id);
}

function scanForPlaintext(v: TestVault, text: string, secrets: string[]) {
  const files = v.rawDatabaseFiles();
  for (const secret of secrets) {
    expect(text, `a dump holds ${secret}`).not.toContain(secret);
    const needle = Buffer.from(secret, 'utf8');
    for (const file of files) expect(file.includes(needle), `a database file holds ${secret}`).toBe(false);
  }
}

describe('key rotate', () => {
  it.runIf(ONCE)(
    'rotates back to a retired key and away from it again (its retired file is already there)',
    async () => {
      const { v, secrets } = await vaultWithSecrets(5);
      const keyA = readFileSync(join(v.home, 'master.key'), 'utf8').trim();
      const toB = await v.json<{ retired_key_file: string }>(['key', 'rotate']);
      const retiredA = toB.retired_key_file;
      // Back to A from its retired file, then away from A once more: master.key.retired-<A> exists.
      const backToA = await v.cli(['key', 'rotate', '--new-key-file', retiredA, '--json']);
      expect(backToA.code, backToA.stderr).toBe(0);
      expect(readFileSync(join(v.home, 'master.key'), 'utf8').trim()).toBe(keyA);
      const toC = await v.cli(['key', 'rotate', '--json']);
      expect(toC.code, toC.stderr).toBe(0);
      expect(readFileSync(retiredA, 'utf8').trim()).toBe(keyA);
      expect(readFileSync(join(v.home, 'master.key'), 'utf8').trim()).not.toBe(keyA);
      expect(await decryptAll(v)).toEqual([...secrets].sort());
    },
  );

  it('a rotation that cannot reach the database leaves no master.key.new behind: the next one runs', async () => {
    const { v, secrets } = await vaultWithSecrets(1);
    const keyBefore = readFileSync(join(v.home, 'master.key'), 'utf8');
    const unreachable = await v.cli(['key', 'rotate'], {
      env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere' },
    });
    expect(unreachable.code).toBe(8);
    // The database is checked before a key file is written or announced.
    expect(unreachable.stderr).not.toContain('master.key.new');
    expect(existsSync(join(v.home, 'master.key.new'))).toBe(false);
    expect(readFileSync(join(v.home, 'master.key'), 'utf8')).toBe(keyBefore);
    const rotated = await v.cli(['key', 'rotate']);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
  });

  it('a --new-key-file that holds no key is bad input (exit 2) naming the flag, never echoing it; nothing changes', async () => {
    const { v, secrets } = await vaultWithSecrets(1);
    const file = join(v.home, '..', 'not-a-key.txt');
    writeFileSync(file, 'not-a-key-hunter2\n');
    const before = await v.dump();
    const refused = await v.cli(['key', 'rotate', '--new-key-file', file]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`--new-key-file: the master key from ${file} is not 32 bytes`);
    expect(refused.stderr).not.toContain('hunter2');
    expect(await v.dump()).toBe(before);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
  });

  it('--reencrypt under a key that does not open the vault: exit 6 and nothing written, every secret still opens', async () => {
    const { v, secrets } = await vaultWithSecrets(3);
    const wrong = join(v.home, '..', 'wrong.key');
    writeFileSync(wrong, (await v.cli(['key', 'generate'])).stdout, { mode: 0o600 });
    const before = await v.dump();
    // The wrong key configured and given as the "new" one: the same key, so no re-wrap would check it.
    const refused = await v.cli(['key', 'rotate', '--new-key-file', wrong, '--reencrypt'], {
      env: { CREDENTIAL_MASTER_KEY_FILE: wrong },
    });
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toMatch(/wrapped by key id \w+, not by the configured key .*nothing was changed/);
    expect(await v.dump()).toBe(before);
    // A plain rotation under that key: the contract's words for a key that does not open the vault.
    const rotate = await v.cli(['key', 'rotate'], { env: { CREDENTIAL_MASTER_KEY_FILE: wrong } });
    expect(rotate.code, rotate.stderr).toBe(6);
    expect(rotate.stderr).toMatch(
      /the master key does not match this vault \(expected key id \w+, got \w+\)/,
    );
    expect(existsSync(join(v.home, 'master.key.new'))).toBe(false);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    const again = await v.cli(['key', 'rotate', '--reencrypt', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
  });

  it('a key from the environment on PostgreSQL: the new key goes into a data folder made 0700, and the advice is a restart', async ({
    skip,
  }) => {
    const { v, secrets } = await vaultWithSecrets(1);
    if (v.kind !== 'postgres') skip('the embedded database lives in the data folder');
    const home = join(v.root, 'no-such-home');
    const rotated = await v.cli(['key', 'rotate'], {
      env: {
        CREDVAULT_HOME: home,
        CREDENTIAL_MASTER_KEY: readFileSync(join(v.home, 'master.key'), 'utf8').trim(),
      },
    });
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(statSync(home).mode & 0o777).toBe(0o700);
    expect(statSync(join(home, 'master.key.new')).mode & 0o777).toBe(0o600);
    expect(rotated.stderr).toContain('replace CREDENTIAL_MASTER_KEY');
    expect(rotated.stderr).toContain('a running daemon then needs a restart');
    writeFileSync(join(v.home, 'master.key'), readFileSync(join(home, 'master.key.new')));
    expect(await decryptAll(v)).toEqual([...secrets].sort());

    // The new key configured, now from a key file: master.key.new, left behind, holds the key in use.
    // The next rotation says the one that made it finished (not "may not have finished", whose
    // --new-key-file would be "the key already in use").
    const keyFile = join(v.root, 'configured.key');
    writeFileSync(keyFile, readFileSync(join(home, 'master.key.new')), { mode: 0o600 });
    const fromFile = { CREDVAULT_HOME: home, CREDENTIAL_MASTER_KEY_FILE: keyFile };
    const leftover = await v.cli(['key', 'rotate'], { env: fromFile });
    expect(leftover.code).toBe(2);
    expect(leftover.stderr).toContain(`${join(home, 'master.key.new')} holds the key in use`);
    expect(leftover.stderr).toContain('the rotation that made it finished');
    expect(leftover.stderr).toContain(`Delete ${join(home, 'master.key.new')} once the key is kept`);
    rmSync(join(home, 'master.key.new'));
    const again = await v.cli(['key', 'rotate'], { env: fromFile });
    expect(again.code, again.stderr).toBe(0);
    // The file's contents are what to change, not "remove the old one".
    expect(again.stderr).toContain(`replace the contents of ${keyFile} (CREDENTIAL_MASTER_KEY_FILE) with it`);
    expect(again.stderr).toContain('a running daemon then needs SIGHUP');

    // The new key configured, and master.key.new holding the key rotated away from just now (a copy
    // left behind): a retired key, which "finish that rotation" would move the vault back to.
    const retired = readFileSync(keyFile);
    writeFileSync(keyFile, readFileSync(join(home, 'master.key.new')));
    writeFileSync(join(home, 'master.key.new'), retired, { mode: 0o600 });
    const stale = await v.cli(['key', 'rotate'], { env: fromFile });
    expect(stale.code, stale.stderr).toBe(2);
    expect(stale.stderr).toMatch(
      /master\.key\.new holds key id \w+, which the vault was rotated away from on \S+: a retired key, not an unfinished rotation/,
    );
    expect(stale.stderr).not.toContain('Finish that rotation');
    expect((await v.cli(['key', 'status'], { env: fromFile })).code).toBe(0);
  });

  it('installs a new key file the user wrote with any mode as master.key 0600', async () => {
    const { v, secrets } = await vaultWithSecrets(1);
    const key = (await v.cli(['key', 'generate'])).stdout.trim();
    const file = join(v.home, 'master.key.new');
    writeFileSync(file, `${key}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const rotated = await v.cli(['key', 'rotate', '--new-key-file', file, '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const installed = join(v.home, 'master.key');
    expect(readFileSync(installed, 'utf8').trim()).toBe(key);
    expect(statSync(installed).mode & 0o777).toBe(0o600);
    expect(existsSync(file)).toBe(false);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
  });

  it('takes master.key.new named by a relative path (run from the data folder) as by its full path: renamed into place, no copy of the key left behind', async () => {
    const { v, secrets } = await vaultWithSecrets(1);
    const key = (await v.cli(['key', 'generate'])).stdout.trim();
    const file = join(v.home, 'master.key.new');
    writeFileSync(file, `${key}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const rotated = await v.cli(['key', 'rotate', '--new-key-file', 'master.key.new', '--json'], {
      cwd: v.home,
    });
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(readFileSync(join(v.home, 'master.key'), 'utf8').trim()).toBe(key);
    expect(existsSync(file)).toBe(false);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    // The next rotation is not stopped by a leftover master.key.new holding the key in use.
    const next = await v.cli(['key', 'rotate', '--json']);
    expect(next.code, next.stderr).toBe(0);
  });

  it('re-wraps more data keys than one statement carries, each to the same key material; a key that does not open leaves every one as it was', async () => {
    const { v, secrets } = await vaultWithSecrets(5);
    const keyFile = join(v.home, 'master.key');
    const before = LocalKeySource.fromText(readFileSync(keyFile, 'utf8'), keyFile);
    // 12,000 more data keys, wrapped by credvault's own code: three UPDATE statements' worth.
    const extra = await addDataKeys(v, before, 12_000);
    const wrappedBefore = await v.sql('select id, wrapped_key, kek_id from data_keys order by id');

    // One more, stored after the others, whose wrapped form does not open.
    const [bad] = await addDataKeys(v, before, 1, { broken: true });
    const refused = await v.cli(['key', 'rotate', '--json']);
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toContain(`data key ${bad!.id} does not open with the master key`);
    await v.sql('delete from data_keys where id = $1', [bad!.id]);
    expect(await v.sql('select id, wrapped_key, kek_id from data_keys order by id')).toEqual(wrappedBefore);
    expect(LocalKeySource.fromText(readFileSync(keyFile, 'utf8'), keyFile).keyId).toBe(before.keyId);
    // The key made for the refused run is gone with it (the next run would stop at it).
    expect(existsSync(`${keyFile}.new`)).toBe(false);

    const rotated = await v.json<{ data_keys_rewrapped: number; to_key_id: string }>(['key', 'rotate']);
    expect(rotated.data_keys_rewrapped).toBe(12_006);
    const after = LocalKeySource.fromText(readFileSync(keyFile, 'utf8'), keyFile);
    expect(after.keyId).toBe(rotated.to_key_id);
    const stored = new Map(
      (
        await v.sql<{ id: string; wrapped_key: string; kek_id: string }>(
          'select id, wrapped_key, kek_id from data_keys',
        )
      ).map((r) => [r.id, r]),
    );
    const wrong = extra.filter((k) => {
      const row = stored.get(k.id);
      return (
        row?.kek_id !== after.keyId || !after.unwrapSync(row.wrapped_key, { dataKeyId: k.id }).equals(k.key)
      );
    });
    expect(wrong.map((k) => k.id)).toEqual([]);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
  });

  it('key status on 12,000 data keys under a local key: opens every one, counts grant keys by group, and shows the one that does not open', async () => {
    const { v } = await vaultWithSecrets(5);
    const keyFile = join(v.home, 'master.key');
    const source = LocalKeySource.fromText(readFileSync(keyFile, 'utf8'), keyFile);
    await addDataKeys(v, source, 12_000);
    const [bad] = await addDataKeys(v, source, 1, { broken: true });

    const listed = await v.cli(['key', 'status', '--json']);
    // One data key the key does not open: the report, then exit 6 naming how many.
    expect(listed.code).toBe(6);
    expect(listed.stderr).toContain("does not open 1 of this vault's 12007 data keys");
    const status = JSON.parse(listed.stdout) as {
      key_matches_vault: boolean;
      data_keys_opened: number;
      secrets: number;
      data_keys: Array<{ id: string; scope: string; matches_key: boolean }>;
    };
    expect(status.data_keys).toHaveLength(12_007);
    expect(status.data_keys_opened).toBe(12_007);
    expect(status.key_matches_vault).toBe(false);
    expect(status.data_keys.filter((k) => !k.matches_key).map((k) => k.id)).toEqual([bad!.id]);
    expect(status.secrets).toBe(12);

    // On a terminal: the vault key listed, the 12,006 grant keys in two lines (opening or not).
    const shown = await v.cli(['key', 'status']);
    expect(shown.code, shown.stderr).toBe(6);
    expect(shown.stdout.split('\n').length).toBeLessThan(40);
    expect(shown.stdout).toMatch(
      new RegExp(`^12005\\s+active\\s+local ${source.keyId}\\s+yes\\s+10\\s*$`, 'm'),
    );
    expect(shown.stdout).toMatch(new RegExp(`^1\\s+active\\s+local ${source.keyId}\\s+NO\\s+0\\s*$`, 'm'));
    expect(shown.stdout).toMatch(/opens this vault\s+NO/);
  });

  it('re-wraps the data keys of 1,000 secrets in one step; the old key is refused and the audit chain records it', async () => {
    const { v, secrets } = await vaultWithSecrets();
    const oldKey = readFileSync(join(v.home, 'master.key'), 'utf8').trim();
    const status = await v.json<{ key_id: string; secrets: number; data_keys: unknown[] }>(['key', 'status']);
    expect(status.secrets).toBe(1002);
    expect(status.data_keys).toHaveLength(501);
    const ciphertexts = await v.sql(
      'select id, access_token_enc, refresh_token_enc from oauth_tokens_vault order by id',
    );

    const rotated = await v.json<{
      from_key_id: string;
      to_key_id: string;
      data_keys_rewrapped: number;
      key_file: string;
      retired_key_file: string;
    }>(['key', 'rotate']);
    expect(rotated.from_key_id).toBe(status.key_id);
    expect(rotated.to_key_id).not.toBe(status.key_id);
    expect(rotated.data_keys_rewrapped).toBe(501);
    // The new key replaced master.key; the old one is kept aside under its key id.
    expect(rotated.key_file).toBe(join(v.home, 'master.key'));
    expect(rotated.retired_key_file).toBe(join(v.home, `master.key.retired-${status.key_id}`));
    expect(readFileSync(rotated.retired_key_file, 'utf8').trim()).toBe(oldKey);
    expect(existsSync(join(v.home, 'master.key.new'))).toBe(false);

    // Re-wrapping touched no secret, and every one decrypts with the new key.
    expect(
      await v.sql('select id, access_token_enc, refresh_token_enc from oauth_tokens_vault order by id'),
    ).toEqual(ciphertexts);
    const kek = await v.sql<{ kek_id: string; n: number }>(
      'select kek_id, count(*)::int as n from data_keys group by kek_id',
    );
    expect(kek).toEqual([{ kek_id: rotated.to_key_id, n: 501 }]);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    const seven = (await seededIds(v))[7]!;
    const token = await v.cli(['token', 'get', seven], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);

    // The old key, wherever it comes from, is refused with the key ids.
    const refused = await v.cli(['token', 'get', seven], {
      env: { CREDENTIAL_MASTER_KEY: oldKey },
      secretOutput: true,
    });
    expect(refused.code).toBe(6);
    expect(refused.stderr).toContain(
      `the master key does not match this vault (expected key id ${rotated.to_key_id}, got ${status.key_id})`,
    );
    const audit = await v.json<Array<{ action: string; detail: Record<string, unknown> }>>([
      'audit',
      'list',
      '--limit',
      '5',
    ]);
    const rotation = audit.find((a) => a.action === 'key.rotate')!;
    expect(rotation.detail).toMatchObject({
      from_key_id: status.key_id,
      to_key_id: rotated.to_key_id,
      data_keys: 501,
    });
    expect((await v.cli(['audit', 'verify'])).code).toBe(0);
  });

  it('--reencrypt interrupted (Ctrl-C) while its batches run (no lease to wait for) resumes on the next run as its first note says, every secret readable', async () => {
    const { v, secrets } = await vaultWithSecrets(1000);
    const keyBefore = readFileSync(join(v.home, 'master.key'), 'utf8');
    const child = v.spawn(['key', 'rotate', '--reencrypt']);
    child.stdin!.end();
    let stderr = '';
    let interrupted = false;
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.on('close', (code, signal) => resolve([code, signal])),
    );
    // Off a terminal it prints a line at every tenth: the first after 0 comes once a batch of 500
    // grants (1,000 secrets) has committed, while the second of two runs. It is interrupted there.
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
      if (!interrupted && /re-encrypted [1-9]\d*\/2002 secrets/.test(stderr)) {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    expect(await exited, stderr).toEqual([null, 'SIGINT']);
    expect(interrupted, stderr).toBe(true);
    expect(readFileSync(join(v.home, 'master.key'), 'utf8')).not.toBe(keyBefore);
    expect(existsSync(join(v.home, 'master.key.new'))).toBe(false);
    // What the start said to do if interrupted is still true now that master.key.new is master.key.
    expect(stderr).toContain(
      `If this is interrupted, run \`credvault key rotate --new-key-file ${join(v.home, 'master.key.new')} --reencrypt\` while ${join(v.home, 'master.key.new')} exists; once it is gone, \`credvault key rotate --reencrypt\` goes on where it stopped`,
    );
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    const resumed = await v.json<{
      reencrypted: { secrets: number; resumed: boolean };
      next_step: string | null;
    }>(['key', 'rotate', '--reencrypt']);
    expect(resumed.reencrypted.resumed).toBe(true);
    // The configured key is the one the vault answers to: nothing to configure, nothing to remove.
    expect(resumed.next_step).toBeNull();
    expect(resumed.reencrypted.secrets).toBeLessThan(2002);
    const keys = await v.sql<{ scope: string; status: string; n: number }>(
      'select scope, status, count(*)::int as n from data_keys group by scope, status order by 1, 2',
    );
    expect(keys).toEqual([
      { scope: 'grant', status: 'active', n: 1000 },
      { scope: 'vault', status: 'active', n: 1 },
    ]);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    expect((await v.cli(['audit', 'verify'])).code).toBe(0);
  }, 120_000);

  it('--reencrypt killed half-way resumes on the next run; no secret is ever stored in the clear', async () => {
    const { v, secrets } = await vaultWithSecrets(100);
    // Half the grants are being refreshed (their lease is held): the run re-encrypts the other half,
    // then waits for them. That is where it is killed.
    await v.sql(
      `update oauth_tokens_vault set lease_owner = 'test:1:elsewhere', lease_expires_at = now() + interval '10 minutes'
       where id in (select id from oauth_tokens_vault order by id limit 50)`,
    );
    const child = v.spawn(['key', 'rotate', '--reencrypt']);
    child.stdin!.end();
    let stderr = '';
    const waiting = new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString('utf8');
        if (/waiting for 50 grants being refreshed/.test(stderr)) resolve();
      });
      child.on('exit', (code) => reject(new Error(`key rotate exited ${code} before waiting:\n${stderr}`)));
    });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    // Scans while it runs: the database never holds a secret in the clear.
    let scans = 0;
    let stopScanning = false;
    const scanning = (async () => {
      while (!stopScanning) {
        scanForPlaintext(v, v.kind === 'postgres' ? await v.dump() : '', secrets);
        scans += 1;
        // Reading every database file is heavy: often enough to see each batch, not in a busy loop.
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    try {
      await waiting;
    } finally {
      stopScanning = true;
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      await scanning;
    }
    expect(stderr).toMatch(/re-encrypted \d+\/202 secrets/);
    expect(scans).toBeGreaterThan(0);

    // Half done: the vault key and half the grant keys are new; the rest wait, still readable.
    const state = await v.sql<{ scope: string; status: string; n: number }>(
      'select scope, status, count(*)::int as n from data_keys group by scope, status order by 1, 2',
    );
    expect(state).toEqual([
      { scope: 'grant', status: 'active', n: 50 },
      { scope: 'grant', status: 'retired', n: 50 },
      { scope: 'grant', status: 'retiring', n: 50 },
      { scope: 'vault', status: 'active', n: 1 },
      { scope: 'vault', status: 'retired', n: 1 },
    ]);
    expect(await decryptAll(v)).toEqual([...secrets].sort());

    // The refreshes end; the next run, as the hint says, finishes the work under the key configured
    // now (the one the first run made and installed): no third key.
    await v.sql('update oauth_tokens_vault set lease_owner = null, lease_expires_at = null');
    const keyBefore = readFileSync(join(v.home, 'master.key'), 'utf8');
    const resumed = await v.json<{ reencrypted: { secrets: number; data_keys: number; resumed: boolean } }>([
      'key',
      'rotate',
      '--reencrypt',
    ]);
    expect(readFileSync(join(v.home, 'master.key'), 'utf8')).toBe(keyBefore);
    expect(existsSync(join(v.home, 'master.key.new'))).toBe(false);
    expect(resumed.reencrypted).toEqual({ secrets: 100, data_keys: 50, resumed: true });
    const after = await v.sql<{ scope: string; status: string; n: number }>(
      'select scope, status, count(*)::int as n from data_keys group by scope, status order by 1, 2',
    );
    expect(after).toEqual([
      { scope: 'grant', status: 'active', n: 100 },
      { scope: 'vault', status: 'active', n: 1 },
    ]);
    // Each grant has a key of its own again.
    const shared = await v.sql<{ n: number }>(
      'select count(distinct data_key_id)::int as n from oauth_tokens_vault',
    );
    expect(shared[0]!.n).toBe(100);
    expect(await decryptAll(v)).toEqual([...secrets].sort());
    scanForPlaintext(v, await v.dump(), secrets);
    const audit = await v.sql<{ action: string }>(
      "select action from credential_access_audit where action like 'key.%' order by id",
    );
    // Each batch's decryptions are on record, the stopped run's included.
    const actions = audit.map((a) => a.action);
    expect(actions.filter((a) => a !== 'key.reencrypt.batch')).toEqual([
      'key.rotate',
      'key.reencrypt.start',
      'key.reencrypt',
    ]);
    expect(actions.filter((a) => a === 'key.reencrypt.batch').length).toBeGreaterThanOrEqual(2);
    expect((await v.cli(['audit', 'verify'])).code).toBe(0);
  });

  it.runIf(DB_KIND === 'postgres')(
    '--reencrypt that loses its PostgreSQL connection part-way says the rotation is done and where the new key is; going on as it says finishes it',
    async () => {
      const { v, secrets } = await vaultWithSecrets(20);
      const oldKey = readFileSync(join(v.home, 'master.key'), 'utf8').trim();
      const newKeyFile = join(v.home, 'master.key.new');
      // The key from the environment: the new one stays in master.key.new for the user to configure.
      v.env.CREDENTIAL_MASTER_KEY = oldKey;
      // Half the grants are being refreshed: the run re-encrypts the rest, then waits for them, polling
      // the database. The database goes away there (after the rotation committed).
      await v.sql(
        `update oauth_tokens_vault set lease_owner = 'test:1:elsewhere', lease_expires_at = now() + interval '10 minutes'
         where id in (select id from oauth_tokens_vault order by id limit 10)`,
      );
      const proxy = await startDbProxy(v.databaseUrl!);
      try {
        const child = v.spawn(['key', 'rotate', '--reencrypt'], { env: { DATABASE_URL: proxy.url } });
        child.stdin!.end();
        let stderr = '';
        const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
        child.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString('utf8');
          if (/waiting for 10 grants being refreshed/.test(stderr)) proxy.down();
        });
        expect(await exited, stderr).toBe(8);
        expect(stderr).toContain('cannot reach the database');
        expect(stderr).toMatch(/The rotation itself is done: \d+ data keys are now under key id (\w+)/);
        const newId = /now under key id (\w+)/.exec(stderr)![1]!;
        expect(stderr).toContain(
          `Configure the new key (key id ${newId}) where credvault reads it: it is in ${newKeyFile}, and replace CREDENTIAL_MASTER_KEY with it`,
        );
        expect(stderr).toContain('Then run `credvault key rotate --reencrypt` to finish');
      } finally {
        await proxy.close();
      }
      await v.sql('update oauth_tokens_vault set lease_owner = null, lease_expires_at = null');
      // Run again with the old key still configured: pointed at the key that master.key.new holds.
      const stale = await v.cli(['key', 'rotate', '--reencrypt']);
      expect(stale.code).toBe(6);
      expect(stale.stderr).toContain(`${newKeyFile} holds key id`);
      expect(stale.stderr).toContain(`credvault key rotate --reencrypt --new-key-file ${newKeyFile}`);
      expect(stale.stderr).not.toMatch(/Configure the new key \(key id/);
      // As the first hint says: the new key configured, the same command finishes.
      v.env.CREDENTIAL_MASTER_KEY = readFileSync(newKeyFile, 'utf8').trim();
      const resumed = await v.json<{ reencrypted: { resumed: boolean }; next_step: string | null }>([
        'key',
        'rotate',
        '--reencrypt',
      ]);
      expect(resumed.reencrypted.resumed).toBe(true);
      expect(resumed.next_step).toBeNull();
      expect(await decryptAll(v)).toEqual([...secrets].sort());
    },
  );

  it('a running daemon keeps serving tokens through a rotation with --reencrypt', async () => {
    const { v, tokens } = await vaultWithSecrets(40);
    const client = await v.json<{ token: string }>(['clients', 'create', 'ci', '--all']);
    const ids = await seededIds(v);
    expect(ids).toHaveLength(40);
    const daemon = await startDaemon(v);
    try {
      const serve = async (i: number) => {
        const answer = await daemon.get(`/v1/connections/${ids[i]}/token`, {
          token: client.token,
        });
        expect(answer.status, answer.body).toBe(200);
        return answer.json<{ access_token: string }>().access_token;
      };
      // Some data keys are in the daemon's memory, most are not.
      for (let i = 0; i < 5; i++) expect(await serve(i)).toBe(tokens[i * 2]);
      let served = 0;
      let stop = false;
      // The last connection is left alone until the rotation is over, so the daemon has never held its
      // token: serving it afterwards needs a data key wrapped by the new master key.
      const during = (async () => {
        while (!stop) {
          await serve(served % 39);
          served += 1;
          // A caller every few milliseconds, not a busy loop starving the rotation it runs beside.
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      const rotated = await v.cli(['key', 'rotate', '--reencrypt', '--json']);
      stop = true;
      await during;
      expect(rotated.code, rotated.stderr).toBe(0);
      expect(served).toBeGreaterThan(0);
      // After it, without a SIGHUP: keys it never opened are wrapped by the new master key, which
      // the daemon picks up from master.key.
      for (let i = 0; i < 40; i++) expect(await serve(i)).toBe(tokens[i * 2]);
      const cli = await v.cli(['token', 'get', ids[39]!], { secretOutput: true });
      expect(cli.code, cli.stderr).toBe(0);
    } finally {
      expect(await daemon.stop()).toBe(0);
    }
  });
});
