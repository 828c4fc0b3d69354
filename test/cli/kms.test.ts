import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  adopt,
  aws,
  BACKENDS,
  counting,
  GCP_KEY,
  gcp,
  transit,
  useKmsDoubles,
  vaults,
  vaultWithConnection,
} from '../helpers/kms.js';
import { ROOT } from '../helpers/paths.js';
import { createVault, type TestVault } from '../helpers/vault.js';

/** The KMS key sources against local servers speaking each service's protocol (see helpers/kms.ts). */
useKmsDoubles();

describe.each(BACKENDS)('$kind key source', (backend) => {
  it('moves a vault to the KMS and back, unwrapping each data key once per process', async () => {
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    const before = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(before.code, before.stderr).toBe(0);

    const moved = await counting(backend, () =>
      v.json<{ to_key_source: string; data_keys_rewrapped: number }>([
        'key',
        'rotate',
        '--to-kms',
        backend.uri(),
      ]),
    );
    expect(moved.result.to_key_source).toBe(backend.kind);
    expect(moved.result.data_keys_rewrapped).toBe(2); // the vault's key and the grant's
    // The master key file is kept aside, named for what it is; the vault no longer opens with it.
    expect(existsSync(join(v.home, 'master.key'))).toBe(false);
    const stale = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(stale.code).toBe(6);
    // The data keys know their wrapping key's kind: the way on is CREDENTIAL_KMS_URI, not `init` (which
    // says the same, not "put its file back at master.key").
    expect(stale.stderr).toContain('no master key is configured');
    expect(stale.stderr).toContain(`wrapped by a KMS key (${backend.kind}`);
    expect(stale.stderr).toContain('set CREDENTIAL_KMS_URI');
    expect(stale.stderr).not.toContain('credvault init');
    const init = await v.cli(['init']);
    expect(init.code).toBe(6);
    expect(init.stderr).toContain('set CREDENTIAL_KMS_URI');
    expect(init.stderr).not.toContain('put its file back');
    expect(existsSync(join(v.home, 'master.key'))).toBe(false);

    v.env.CREDENTIAL_KMS_URI = backend.uri();
    const status = await v.json<{
      key_source: string;
      key_matches_vault: boolean;
      data_keys: Array<{ kek_kind: string }>;
    }>(['key', 'status']);
    expect(status.key_source).toBe(backend.kind);
    expect(status.key_matches_vault).toBe(true);
    expect(status.data_keys.every((k) => k.kek_kind === backend.kind)).toBe(true);

    // A refresh opens the app's secrets and the grant's tokens, and writes new ones: two data keys,
    // two KMS calls, however many secrets they protect.
    const served = await counting(backend, () => v.cli(['connections', 'refresh', 'google_ads:1234567890']));
    expect(served.result.code, served.result.stderr).toBe(0);
    expect(served.calls.filter((c) => c === backend.unwrapOp)).toHaveLength(2);

    // A new grant's data key comes from the KMS.
    const app = await v.json<{ client_id: string }>(['apps', 'show', 'google-app']);
    const added = await counting(backend, () => adopt(v, app.client_id, '1112223334'));
    expect(added.result.code, added.result.stderr).toBe(0);
    expect(added.calls).toContain(backend.newKeyOp);
    const wrapped = await v.sql<{ wrapped_key: string; kek_kind: string }>(
      'select wrapped_key, kek_kind from data_keys',
    );
    expect(wrapped.every((k) => k.kek_kind === backend.kind)).toBe(true);

    // key status opens the vault's key and the first grant key with the KMS, not every grant's (a vault
    // of 50,000 grants would cost 50,000 KMS calls per look), and says which it did not check. The
    // second grant key is given the first one's wrapped form: it would not open, and is not claimed to.
    const grantKeys = await v.sql<{ id: string; wrapped_key: string }>(
      "select id, wrapped_key from data_keys where scope = 'grant' order by created_at",
    );
    expect(grantKeys).toHaveLength(2);
    const [first, second] = grantKeys as [(typeof grantKeys)[0], (typeof grantKeys)[0]];
    await v.sql('update data_keys set wrapped_key = $1 where id = $2', [first.wrapped_key, second.id]);
    const looked = await counting(backend, () =>
      v.json<{
        key_matches_vault: boolean;
        data_keys_opened: number;
        data_keys: Array<{ id: string; scope: string; matches_key: boolean | null }>;
      }>(['key', 'status']),
    );
    expect(looked.calls.filter((c) => c === backend.unwrapOp)).toHaveLength(2);
    expect(looked.result.data_keys_opened).toBe(2);
    expect(Object.fromEntries(looked.result.data_keys.map((k) => [k.id, k.matches_key]))).toEqual({
      [looked.result.data_keys.find((k) => k.scope === 'vault')!.id]: true,
      [first.id]: true,
      [second.id]: null,
    });
    const shown = await v.cli(['key', 'status']);
    expect(shown.stdout).toContain('(2 data keys opened, 1 not checked: a KMS call each)');
    expect(shown.stdout).toMatch(new RegExp(`${second.id}\\s+grant\\s+active\\s+\\S+ \\S+\\s+not checked`));
    await v.sql('update data_keys set wrapped_key = $1 where id = $2', [second.wrapped_key, second.id]);

    // And back to a local master key.
    const local = (await v.cli(['key', 'generate'], { secretOutput: true })).stdout.trim();
    const back = await v.json<{ to_key_source: string; data_keys_rewrapped: number }>(
      ['key', 'rotate', '--new-key-file', '-'],
      {
        input: local,
        secretOutput: true,
      },
    );
    expect(back).toMatchObject({ to_key_source: 'local', data_keys_rewrapped: 3 });
    delete v.env.CREDENTIAL_KMS_URI;
    v.env.CREDENTIAL_MASTER_KEY = local;
    const after = await counting(backend, () =>
      v.cli(['token', 'get', 'google_ads:1112223334'], { secretOutput: true }),
    );
    expect(after.result.code, after.result.stderr).toBe(0);
    expect(after.calls).toEqual([]);
    const audit = await v.sql<{ action: string; detail: Record<string, string> }>(
      "select action, detail from credential_access_audit where action = 'key.rotate' order by id",
    );
    expect(audit.map((a) => `${a.detail.from_kind}->${a.detail.to_kind}`)).toEqual([
      `local->${backend.kind}`,
      `${backend.kind}->local`,
    ]);
    expect((await v.cli(['audit', 'verify'])).code).toBe(0);
  });

  it('starts a new vault on the KMS: init writes no master key', async () => {
    const v = await createVault({ initialized: false });
    vaults.push(v);
    Object.assign(v.env, backend.env(), { CREDENTIAL_KMS_URI: backend.uri() });
    const init = await v.cli(['init']);
    expect(init.code, init.stderr).toBe(0);
    expect(existsSync(join(v.home, 'master.key'))).toBe(false);
    const status = await v.json<{ key_source: string; key_matches_vault: boolean }>(['key', 'status']);
    expect(status).toMatchObject({ key_source: backend.kind, key_matches_vault: true });
  });
});

describe('a KMS URI that names no usable key', () => {
  it('is the configured key being unusable from CREDENTIAL_KMS_URI (exit 6), bad input from --to-kms (exit 2); nothing written', async () => {
    const v = await createVault();
    vaults.push(v);
    const dump = await v.dump();
    for (const uri of [
      'bogus://x',
      'aws-kms://',
      'gcp-kms://projects/p',
      'vault-transit://h/transit/nope',
      // An endpoint that is no http(s) URL is the URI's fault for every KMS, checked before any call
      // (AWS's used to reach the SDK and come back as "AWS KMS refused … Invalid URL").
      'aws-kms://alias/credvault?endpoint=not-a-url',
      'aws-kms://alias/credvault?endpoint=localhost:4566',
      'gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k?endpoint=localhost:8443',
    ]) {
      const flag = await v.cli(['key', 'rotate', '--to-kms', uri, '--json']);
      expect(flag.code, flag.stderr).toBe(2);
      expect(JSON.parse(flag.stderr).error).toMatchObject({
        code: 'invalid_input',
        message: expect.stringMatching(
          new RegExp(`^--to-kms "${uri.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" `),
        ),
      });
      const configured = await v.cli(['apps', 'list', '--json'], { env: { CREDENTIAL_KMS_URI: uri } });
      // A command that reads no secret does not open the key; one that does is refused.
      expect(configured.code).toBe(0);
      const reading = await v.cli(['key', 'status', '--json'], { env: { CREDENTIAL_KMS_URI: uri } });
      expect(reading.code, reading.stderr).toBe(6);
      expect(JSON.parse(reading.stderr).error.message).toContain(`CREDENTIAL_KMS_URI "${uri}"`);
      if (uri.includes('endpoint=')) {
        expect(JSON.parse(flag.stderr).error.message).toContain('has an endpoint that is not an http(s) URL');
      }
    }
    // A usable URI with no Google credentials to call it with (no token, no ADC under HOME, no
    // metadata server here): the key error (exit 6) alone, no crash after it.
    const noCredentials = await v.cli(['key', 'rotate', '--to-kms', `gcp-kms://${GCP_KEY}`, '--json'], {
      env: { CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS: gcp.url },
      timeoutMs: 30_000,
    });
    expect(noCredentials.code, noCredentials.stderr).toBe(6);
    expect(JSON.parse(noCredentials.stderr).error.message).toMatch(/^no Google credentials for Cloud KMS/);
    expect(existsSync(join(v.home, 'master.key'))).toBe(true);
    expect(await v.dump()).toBe(dump);
  });
});

describe('aws-kms specifics', () => {
  it('names the vault and the data key in the encryption context, and signs with SigV4', async () => {
    const v = await createVault({ initialized: false });
    vaults.push(v);
    Object.assign(v.env, BACKENDS[0]!.env(), {
      CREDENTIAL_KMS_URI: 'aws-kms://alias/credvault',
      CREDVAULT_VAULT_NAME: 'prod-ads',
    });
    const from = aws.requests.length;
    expect((await v.cli(['init'])).code).toBe(0);
    const generated = aws.requests.slice(from).find((r) => r.operation === 'GenerateDataKey')!;
    const [dek] = await v.sql<{ id: string }>('select id from data_keys');
    expect(generated.json!.EncryptionContext).toEqual({
      'credvault:vault': 'prod-ads',
      'credvault:data-key': dek!.id,
    });
    expect(generated.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIA\w+\/\d{8}\/eu-west-1\/kms\/aws4_request/,
    );
    expect(generated.headers['x-amz-target']).toBe('TrentService.GenerateDataKey');

    // A wrapped key moved to another row no longer opens: the context names its row.
    await v.sql(`insert into data_keys (id, scope, wrapped_key, kek_id, kek_kind, status)
      select gen_random_uuid(), 'grant', wrapped_key, kek_id, kek_kind, 'active' from data_keys`);
    const [copy] = await v.sql<{ id: string }>("select id from data_keys where scope = 'grant'");
    await v.sql(`update data_keys set status = 'retired' where scope = 'vault'`);
    await v.sql(`update data_keys set scope = 'vault' where id = $1`, [copy!.id]);
    const moved = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify({ label: 'x', client_id: 'x', client_secret: 's', developer_token: 'd' }),
    });
    expect(moved.code).toBe(6);
    expect(moved.stderr).toMatch(/InvalidCiphertextException/);
  });
});

describe('vault-transit specifics', () => {
  it('key rotate after the Transit key was rotated re-wraps inside Vault to the newest version', async () => {
    const v = await vaultWithConnection();
    const backend = BACKENDS[2]!;
    Object.assign(v.env, backend.env());
    expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
    v.env.CREDENTIAL_KMS_URI = backend.uri();
    const version = transit.rotate('credvault');
    const rotated = await counting(backend, () => v.cli(['key', 'rotate']));
    expect(rotated.result.code, rotated.result.stderr).toBe(0);
    expect(rotated.result.stderr).toContain('under the newest version of vault-transit://');
    // Re-wrapped inside Vault: no data key was decrypted on the way.
    expect(rotated.calls.filter((c) => c === 'rewrap')).toHaveLength(2);
    expect(rotated.calls).not.toContain('decrypt');
    const wrapped = await v.sql<{ wrapped_key: string }>('select wrapped_key from data_keys');
    expect(wrapped.every((k) => k.wrapped_key.startsWith(`vault:v${version}:`))).toBe(true);
    // Old versions can now be retired in Vault; the vault still opens.
    transit.setMinDecryptionVersion('credvault', version);
    const token = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);
  });
});

describe('Vault namespaces', () => {
  it('sends VAULT_NAMESPACE with every call: a key that lives in a namespace is reached only with it', async () => {
    transit.createKey('team-kek', { namespace: 'team-a' });
    const v = await vaultWithConnection();
    const uri = `vault-transit://${new URL(transit.url).host}/transit/keys/team-kek`;
    Object.assign(v.env, { VAULT_ADDR: transit.url, VAULT_TOKEN: transit.token });
    const dump = await v.dump();
    const outside = await v.cli(['key', 'rotate', '--to-kms', uri]);
    expect(outside.code).toBe(6);
    expect(await v.dump()).toBe(dump);

    v.env.VAULT_NAMESPACE = 'team-a';
    const mark = transit.requests.length;
    const moved = await v.cli(['key', 'rotate', '--to-kms', uri, '--json']);
    expect(moved.code, moved.stderr).toBe(0);
    const calls = transit.requests.slice(mark);
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((r) => r.namespace === 'team-a')).toBe(true);
    v.env.CREDENTIAL_KMS_URI = uri;
    const token = await v.cli(['token', 'get', 'google_ads:1234567890'], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);
  });
});

/**
 * openVault({ env }) in a program of its own: `env` is the whole configuration, key source
 * credentials included. The program's process.env holds other, working credentials and a dead
 * endpoint; none of them may be used. Prints what getValidAccessToken gave or threw.
 */
async function libraryRun(
  v: TestVault,
  env: Record<string, string>,
  processEnv: Record<string, string>,
): Promise<{ ok: boolean; platform?: string; code?: string; message?: string; hint?: string }> {
  const appDir = join(v.root, 'kms-app');
  if (!existsSync(appDir)) {
    mkdirSync(join(appDir, 'node_modules'), { recursive: true });
    symlinkSync(ROOT, join(appDir, 'node_modules', 'credvault'), 'dir');
    writeFileSync(join(appDir, 'package.json'), JSON.stringify({ name: 'kms-app', type: 'module' }));
  }
  const file = join(appDir, 'token.mjs');
  writeFileSync(
    file,
    `import { openVault } from 'credvault';
const vault = await openVault({ home: ${JSON.stringify(v.home)}, databaseUrl: ${JSON.stringify(v.databaseUrl ?? undefined)}, actor: 'kms-app', env: ${JSON.stringify(env)} });
let out;
try {
  const token = await vault.getValidAccessToken('google_ads:1234567890', { minTtl: 0 });
  out = { ok: true, platform: token.platform };
} catch (error) {
  out = { ok: false, code: error.code, message: error.message, hint: error.hint };
} finally {
  await vault.close();
}
process.stdout.write(JSON.stringify(out));
`,
  );
  const child = spawn(process.execPath, [file], {
    cwd: appDir,
    env: { PATH: process.env.PATH, HOME: v.root, ...processEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  expect(code, stderr).toBe(0);
  return JSON.parse(stdout);
}

describe('a vault opened by the library with its own env', () => {
  const DEAD = 'http://127.0.0.1:9';

  it('aws-kms: takes the credentials and endpoint from env, never from process.env', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'aws-kms')!;
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
    // Working credentials of another identity in the process environment.
    const other = aws.addAccessKey('AKIAPROCESSENVDECOY1');
    const processEnv = {
      AWS_ACCESS_KEY_ID: other.accessKeyId,
      AWS_SECRET_ACCESS_KEY: other.secretAccessKey,
      AWS_REGION: aws.region,
      AWS_ENDPOINT_URL_KMS: aws.url,
      // The chain's last resort, the instance role, is not asked here.
      AWS_EC2_METADATA_DISABLED: 'true',
    };
    const signedBy = (from: number) =>
      aws.requests
        .slice(from)
        .map((r) => /Credential=([A-Z0-9]+)\//.exec(r.headers.authorization ?? '')?.[1] ?? null);

    // Everything in env: it works, signed with env's key, at env's endpoint.
    let mark = aws.requests.length;
    const served = await libraryRun(
      v,
      { ...backend.env(), CREDENTIAL_KMS_URI: backend.uri() },
      { ...processEnv, AWS_ENDPOINT_URL_KMS: DEAD, AWS_REGION: 'us-west-2' },
    );
    expect(served).toEqual({ ok: true, platform: 'google_ads' });
    expect(signedBy(mark)).not.toHaveLength(0);
    expect(new Set(signedBy(mark))).toEqual(new Set([aws.accessKeyId]));

    // No credentials in env: refused as having none, not served with the process's.
    mark = aws.requests.length;
    const { AWS_ACCESS_KEY_ID: _, AWS_SECRET_ACCESS_KEY: __, ...withoutKeys } = backend.env();
    const refused = await libraryRun(v, { ...withoutKeys, CREDENTIAL_KMS_URI: backend.uri() }, processEnv);
    expect(refused).toMatchObject({ ok: false, code: 'key_error' });
    expect(refused.message).toMatch(/^no AWS credentials for KMS/);
    expect(signedBy(mark)).not.toContain(other.accessKeyId);
  });

  it('gcp-kms: takes GOOGLE_APPLICATION_CREDENTIALS from env, never from process.env', async () => {
    const backend = BACKENDS.find((b) => b.kind === 'gcp-kms')!;
    const v = await vaultWithConnection();
    Object.assign(v.env, backend.env());
    expect((await v.cli(['key', 'rotate', '--to-kms', backend.uri()])).code).toBe(0);
    // Two workload identities, each a credentials file with its subject token beside it.
    const identity = (name: string) => {
      const tokenFile = join(v.root, `${name}.token`);
      const { json, subjectToken } = gcp.externalAccount(tokenFile);
      writeFileSync(tokenFile, subjectToken);
      writeFileSync(join(v.root, `${name}.json`), JSON.stringify(json));
      return { file: join(v.root, `${name}.json`), subjectToken };
    };
    const mine = identity('env-identity');
    const other = identity('process-identity');
    const processEnv = {
      GOOGLE_APPLICATION_CREDENTIALS: other.file,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS: gcp.url,
    };
    const env = {
      CREDENTIAL_KMS_URI: `gcp-kms://${GCP_KEY}`,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS: gcp.url,
    };

    let mark = gcp.exchanged.length;
    const served = await libraryRun(
      v,
      { ...env, GOOGLE_APPLICATION_CREDENTIALS: mine.file },
      { ...processEnv, CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS: DEAD },
    );
    expect(served).toEqual({ ok: true, platform: 'google_ads' });
    expect(gcp.exchanged.slice(mark).map((e) => e.subjectToken)).toEqual([mine.subjectToken]);

    mark = gcp.exchanged.length;
    const refused = await libraryRun(v, env, processEnv);
    expect(refused).toMatchObject({
      ok: false,
      code: 'key_error',
      message: 'no Google credentials in the environment credvault was given',
    });
    expect(gcp.exchanged.slice(mark)).toEqual([]);
  });
});
