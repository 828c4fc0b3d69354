import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { generateMasterKey } from '../../src/crypto/local-key.js';
import { spawnDaemonOnAnyPort } from '../helpers/daemon.js';
import { BIN } from '../helpers/paths.js';
import { expectNoSecretsLeaked, fakeSecret } from '../helpers/secrets.js';
import { createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';

const vaults: TestVault[] = [];
async function vault(options?: { initialized?: boolean }) {
  const v = await createVault(options);
  vaults.push(v);
  return v;
}
afterEach(async () => {
  await Promise.all(vaults.splice(0).map((v) => v.destroy()));
});

const APP_FIELDS = [
  'id',
  'platform',
  'label',
  'client_id',
  'redirect_uri',
  'scopes',
  'login_customer_id',
  'user_agent',
  'api_version',
  'authorize_url',
  'token_url',
  'revoke_url',
  'api_base_url',
  'enabled',
  'has_client_secret',
  'has_developer_token',
  'created_by',
  'created_at',
  'updated_at',
].sort();

/**
 * The id of the master key that wraps the vault's data key, as a dump shows it (the `kek_id` the
 * refusals name; `key status` reports the same id for the key that opens the vault).
 */
function keyIdIn(dump: string): string {
  const ids = [...dump.matchAll(/"kek_id":"([^"]*)"/g)].map((m) => m[1]!);
  expect(ids).toHaveLength(1);
  expect(ids[0]).toMatch(/^[0-9a-f]{16}$/);
  return ids[0]!;
}

function googleApp(overrides: Record<string, unknown> = {}) {
  return {
    label: 'prod',
    client_id: '1234-abc.apps.googleusercontent.com',
    client_secret: fakeSecret('GOCSPX'),
    developer_token: fakeSecret('devtoken'),
    login_customer_id: '123-456-7890',
    ...overrides,
  };
}

describe('init', () => {
  it('makes the data folder and a 0600 master key in a 0700 folder, and is idempotent', async () => {
    const v = await vault({ initialized: false });
    const first = await v.cli(['init']);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`created a new master key at ${join(v.home, 'master.key')}`);
    expect(first.stderr).toMatch(/Back it up/);
    expect(statSync(join(v.home, 'master.key')).mode & 0o777).toBe(0o600);
    expect(statSync(v.home).mode & 0o777).toBe(0o700);

    const second = await v.json<Record<string, unknown>>(['init']);
    expect(second.created_key_file).toBeNull();
    expect(second.migrations_applied).toEqual([]);
    expect(second.platforms_changed).toEqual([]);
    expect(second.key_origin).toBe(join(v.home, 'master.key'));
    expect(statSync(join(v.home, 'master.key')).mode & 0o777).toBe(0o600);
    // A key file opened to others is closed again, as the folder is.
    chmodSync(join(v.home, 'master.key'), 0o644);
    expect((await v.cli(['init'])).code).toBe(0);
    expect(statSync(join(v.home, 'master.key')).mode & 0o777).toBe(0o600);
  });

  it('two inits at once on a new vault: both succeed, with the one key the first made', async () => {
    const v = await vault({ initialized: false });
    const env = { CREDVAULT_LOCK_TIMEOUT: '60' };
    const [a, b] = await Promise.all([
      v.json<{ key_id: string }>(['init'], { env }),
      v.json<{ key_id: string }>(['init'], { env }),
    ]);
    expect(a.key_id).toBe(b.key_id);
    expect((await v.cli(['key', 'status'])).code).toBe(0);
  });

  it.runIf(ONCE)('uses a key from CREDENTIAL_MASTER_KEY and writes no key file', async () => {
    const v = await vault({ initialized: false });
    const key = (await v.cli(['key', 'generate'])).stdout.trim();
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}=$/);
    const report = await v.json<Record<string, unknown>>(['init'], { env: { CREDENTIAL_MASTER_KEY: key } });
    expect(report.created_key_file).toBeNull();
    expect(report.key_origin).toBe('CREDENTIAL_MASTER_KEY');
    expect(() => statSync(join(v.home, 'master.key'))).toThrow();
  });

  it.runIf(ONCE)(
    'init with no key on a vault that already has one: exit 6 naming its key id, no new master.key, nothing changed',
    async () => {
      const v = await vault();
      renameSync(join(v.home, 'master.key'), join(v.home, 'master.key.away'));
      const before = await v.dump();
      const keyId = keyIdIn(before);
      for (let i = 0; i < 2; i++) {
        const refused = await v.cli(['init']);
        expect(refused.code).toBe(6);
        expect(refused.stderr).toContain('no master key is configured, and this vault already has one');
        expect(refused.stderr).toContain(`wrapped by key id ${keyId}`);
        expect(existsSync(join(v.home, 'master.key'))).toBe(false);
      }
      expect(await v.dump()).toBe(before);
      renameSync(join(v.home, 'master.key.away'), join(v.home, 'master.key'));
      expect((await v.cli(['init'])).code).toBe(0);
    },
  );

  it.runIf(DB_KIND === 'postgres')('reports a database that is not migrated with exit 8', async () => {
    const v = await vault({ initialized: false });
    const result = await v.cli(['apps', 'list']);
    expect(result.code).toBe(8);
    expect(result.stderr).toMatch(/not migrated/);
    expect(result.stderr).toContain('credvault db migrate');
  });

  it.runIf(DB_KIND === 'postgres')(
    'a database that takes no connections now is exit 8 (database_error) naming why, not an internal error',
    async () => {
      const v = await vault();
      const name = new URL(v.databaseUrl!).pathname.slice(1);
      // From another database: the vault's own takes no connection meanwhile.
      const admin = new URL(v.databaseUrl!);
      admin.pathname = '/postgres';
      const client = postgres(admin.toString(), { max: 1, onnotice: () => {} });
      await client.unsafe(`alter database "${name}" allow_connections false`);
      try {
        const refused = await v.cli(['connections', 'list', '--json']);
        expect(refused.code, refused.stderr).toBe(8);
        const { error } = JSON.parse(refused.stderr);
        expect(error.code).toBe('database_error');
        expect(error.message).toContain(`database "${name}" is not currently accepting connections`);
      } finally {
        await client.unsafe(`alter database "${name}" allow_connections true`);
        await client.end();
      }
      expect((await v.cli(['connections', 'list', '--json'])).code).toBe(0);
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'before init, a command finds no vault (exit 8) and makes nothing; init and db migrate make it',
    async () => {
      const v = await vault({ initialized: false });
      for (const args of [
        ['apps', 'list'],
        ['connections', 'list', '--json'],
        ['db', 'status'],
        // No key either: the missing vault is what it says.
        ['key', 'rotate'],
      ]) {
        const result = await v.cli(args);
        expect(result.code, args.join(' ')).toBe(8);
        expect(result.stderr).toContain(`there is no vault at ${v.home}`);
        expect(result.stderr).toContain('credvault init');
      }
      // Nor does the daemon make one.
      const daemon = await v.cli(['daemon', '--listen', `unix:${join(v.root, 'd.sock')}`]);
      expect(daemon.code, daemon.stderr).toBe(8);
      expect(daemon.stderr).toContain(`there is no vault at ${v.home}`);
      expect(existsSync(join(v.home, 'pgdata'))).toBe(false);
      expect(await v.json(['db', 'migrate'])).toMatchObject({
        applied: expect.arrayContaining(['0000_init']),
      });
      expect((await v.cli(['init'])).code).toBe(0);
      expect((await v.cli(['apps', 'list'])).code).toBe(0);
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'keeps the embedded database folder 0700 in a home others may enter (PGlite writes its files 0666)',
    async () => {
      // A home a CI job made with mkdir (0755), the key in the environment: init never ran.
      const v = await vault({ initialized: false });
      mkdirSync(v.home, { recursive: true, mode: 0o755 });
      chmodSync(v.home, 0o755);
      const env = { CREDENTIAL_MASTER_KEY: generateMasterKey() };
      expect((await v.cli(['db', 'migrate'], { env })).code).toBe(0);
      const pgdata = join(v.home, 'pgdata');
      expect(statSync(pgdata).mode & 0o777).toBe(0o700);
      // Opened up since (a restore, a chmod -R): the next command closes it again.
      chmodSync(pgdata, 0o755);
      expect((await v.cli(['platforms', 'list'], { env })).code).toBe(0);
      expect(statSync(pgdata).mode & 0o777).toBe(0o700);
    },
  );

  it('a data folder that is a file: exit 2 naming it, for init and for any other command', async () => {
    const v = await vault({ initialized: false });
    mkdirSync(v.root, { recursive: true });
    const file = join(v.root, 'not-a-folder');
    writeFileSync(file, 'x');
    // On PostgreSQL a command that needs neither key nor embedded database never looks at the folder.
    const commands =
      DB_KIND === 'pglite' ? [['init'], ['connections', 'list'], ['db', 'migrate']] : [['init']];
    for (const [home, words] of [
      [file, `the data folder ${file} is not a folder`],
      [join(file, 'home'), `the data folder ${join(file, 'home')} cannot be used (ENOTDIR)`],
    ] as const) {
      for (const args of commands) {
        const result = await v.cli([...args, '--json'], { env: { CREDVAULT_HOME: home } });
        expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(2);
        expect(JSON.parse(result.stderr).error).toMatchObject({
          code: 'invalid_input',
          message: expect.stringContaining(words),
        });
      }
    }
  });
});

describe('db', () => {
  it('status lists the committed migrations as applied after init', async () => {
    const v = await vault();
    const status = await v.json<{
      up_to_date: boolean;
      migrations: Array<{ tag: string; applied: boolean }>;
    }>(['db', 'status']);
    expect(status.up_to_date).toBe(true);
    expect(status.migrations[0]).toMatchObject({ tag: '0000_init', applied: true });
    expect(await v.json(['db', 'migrate'])).toEqual({ applied: [], newer_migrations: 0 });
  });

  it('a schema behind this credvault (a migration pending): exit 8 naming db migrate; db status still says so', async () => {
    const v = await vault();
    await v.sql(
      'delete from drizzle.__drizzle_migrations where created_at = (select max(created_at) from drizzle.__drizzle_migrations)',
    );
    for (const args of [
      ['apps', 'list'],
      ['clients', 'list'],
    ]) {
      const refused = await v.cli(args);
      expect(refused.code, refused.stderr).toBe(8);
      expect(refused.stderr).toContain('is not migrated (1 migration pending)');
      expect(refused.stderr).toContain('credvault db migrate');
    }
    const status = await v.json<{ up_to_date: boolean }>(['db', 'status']);
    expect(status.up_to_date).toBe(false);
  });

  it('a schema a newer credvault migrated: commands run, and db status, db migrate and the daemon say to upgrade this copy', async () => {
    const v = await vault();
    await v.sql(
      "insert into drizzle.__drizzle_migrations (hash, created_at) select 'from-a-newer-credvault', max(created_at) + 1000 from drizzle.__drizzle_migrations",
    );
    expect((await v.cli(['apps', 'list'])).code).toBe(0);
    const status = await v.json<{ up_to_date: boolean; newer_migrations: number }>(['db', 'status']);
    expect(status).toMatchObject({ up_to_date: true, newer_migrations: 1 });
    expect(await v.json(['db', 'migrate'])).toEqual({ applied: [], newer_migrations: 1 });
    const warning =
      'the database also has 1 migration this credvault does not know: a newer version migrated it. Upgrade credvault here to the version the rest of the fleet runs';
    for (const args of [
      ['db', 'status'],
      ['db', 'migrate'],
    ]) {
      const run = await v.cli(args);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain(warning);
    }
    const { child, logs } = await spawnDaemonOnAnyPort(v, '127.0.0.1');
    child.kill('SIGTERM');
    await once(child, 'close');
    expect(logs()).toContain(warning);
  });

  it.runIf(DB_KIND === 'postgres')(
    "takes libpq's unix socket form (postgres://USER@/DB?host=/folder, Cloud SQL's), and refuses a setting's bad value in the URL with exit 2",
    async () => {
      const v = await vault();
      const url = new URL(v.databaseUrl!);
      const folder = ['/var/run/postgresql', '/run/postgresql', '/tmp'].find((f) =>
        existsSync(join(f, `.s.PGSQL.${url.port || 5432}`)),
      );
      if (folder) {
        const socketUrl = `postgres://${url.username}@${url.pathname}?host=${folder}${url.port ? `&port=${url.port}` : ''}`;
        const listed = await v.cli(['apps', 'list', '--json'], { env: { DATABASE_URL: socketUrl } });
        expect(listed.code, listed.stderr).toBe(0);
        expect(JSON.parse(listed.stdout)).toEqual([]);
      }
      // Several hosts with their ports, which a URL parser cannot read, still go to the driver as given.
      const hosts = `${url.hostname}:${url.port || 5432},${url.hostname}:${url.port || 5432}`;
      const several = `postgres://${url.username}${url.password ? `:${url.password}` : ''}@${hosts}${url.pathname}`;
      const multi = await v.cli(['apps', 'list', '--json'], { env: { DATABASE_URL: several } });
      expect(multi.code, multi.stderr).toBe(0);
      url.searchParams.set('statement_timeout', 'abc');
      const refused = await v.cli(['apps', 'list'], { env: { DATABASE_URL: url.toString() } });
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain('DATABASE_URL sets what the database refuses');
      expect(refused.stderr).toContain('statement_timeout');
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'accepts ?prepare=false in DATABASE_URL (a pooler in transaction mode) as a driver option, not a server setting',
    async () => {
      const v = await vault();
      const url = new URL(v.databaseUrl!);
      url.searchParams.set('prepare', 'false');
      const env = { DATABASE_URL: url.toString() };
      const added = await v.cli(
        ['apps', 'add', 'google_ads', '--label', 'pooled', '--from-file', '-', '--json'],
        {
          env,
          input: JSON.stringify({ client_id: 'id-1', client_secret: 'secret-1' }),
        },
      );
      expect(added.code, added.stderr).toBe(0);
      const listed = await v.cli(['apps', 'list', '--json'], { env });
      expect(JSON.parse(listed.stdout).map((a: { label: string }) => a.label)).toEqual(['pooled']);
      expect((await v.cli(['audit', 'verify'], { env })).code).toBe(0);
      // One neither the driver nor PostgreSQL knows: the database's refusal, exit 8, not an internal error.
      url.searchParams.set('password', 'hunter2-secret');
      const refused = await v.cli(['apps', 'list'], { env: { DATABASE_URL: url.toString() } });
      expect(refused.code, refused.stderr).toBe(8);
      expect(refused.stderr).toContain('refused a setting: unrecognized configuration parameter "password"');
      expect(refused.stderr).toContain('remove it');
      expect(refused.stderr).not.toContain('hunter2-secret');
    },
  );
});

describe('start-up', () => {
  it('loads no HTTP client for commands that make no HTTP call (platforms list, token get)', async () => {
    const v = await vault();
    const probe = join(v.root, 'modules.cjs');
    writeFileSync(
      probe,
      `process.on('exit', () => process.stderr.write('LOADED ' + process.moduleLoadList.filter((m) => /^NativeModule (http|https|_http_client)$/.test(m)).join(',') + '\\n'));`,
    );
    const env = { NODE_OPTIONS: `--require ${probe}` };
    for (const args of [
      ['platforms', 'list', '--json'],
      ['token', 'get', 'no-such-connection'],
    ]) {
      const run = await v.cli(args, { env });
      expect(run.stderr, args.join(' ')).toMatch(/^LOADED $/m);
    }
  });
});

// What the platforms are and how a user names them: the rows init seeds, read by statements every
// command runs on both databases.
describe.runIf(ONCE)('platforms', () => {
  it('lists the four platforms with their capabilities', async () => {
    const v = await vault();
    const list = await v.json<Array<{ id: string; capabilities: Record<string, unknown> }>>([
      'platforms',
      'list',
    ]);
    expect(list.map((p) => p.id).sort()).toEqual([
      'google_ads',
      'linkedin_ads',
      'microsoft_ads',
      'reddit_ads',
    ]);
    const google = list.find((p) => p.id === 'google_ads')!;
    expect(google.capabilities).toMatchObject({
      keywords: true,
      validate_only: 'true',
      budget_unit: 'micros',
      developer_token: 'optional',
      pkce: true,
      refresh_token_rotation: false,
    });
    const human = await v.cli(['platforms', 'list']);
    expect(human.stdout).toMatch(/^PLATFORM\s+NAME/);
    expect(human.stdout).toContain('Microsoft Advertising');
  });

  it('shows one platform, accepting the kebab form', async () => {
    const v = await vault();
    const ms = await v.json<{ id: string; capabilities: Record<string, unknown> }>([
      'platforms',
      'show',
      'microsoft-ads',
    ]);
    expect(ms.id).toBe('microsoft_ads');
    expect(ms.capabilities).toMatchObject({
      refresh_token_rotation: true,
      revocation_endpoint: false,
      developer_token: 'required',
    });
  });

  it('answers an unknown platform with exit 2 listing the valid ones', async () => {
    const v = await vault();
    const result = await v.cli(['platforms', 'show', 'tiktok_ads']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown platform "tiktok_ads"');
    for (const p of ['google_ads', 'microsoft_ads', 'linkedin_ads', 'reddit_ads'])
      expect(result.stderr).toContain(p);
    const json = await v.cli(['apps', 'add', 'tiktok', '--label', 'x', '--json']);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr)).toEqual({
      error: {
        code: 'invalid_input',
        message:
          'unknown platform "tiktok". Valid platforms: google_ads, microsoft_ads, linkedin_ads, reddit_ads (or the kebab forms google-ads, microsoft-ads, linkedin-ads, reddit-ads).',
      },
    });
  });
});

describe('apps', () => {
  it('adds an app from a file and shows it without secrets, with the contract fields', async () => {
    const v = await vault();
    const fields = googleApp();
    const file = join(v.root, 'app.json');
    writeFileSync(file, JSON.stringify(fields));
    const added = await v.json<Record<string, unknown>>(['apps', 'add', 'google_ads', '--from-file', file]);
    expect(Object.keys(added).sort()).toEqual(APP_FIELDS);
    expect(added).toMatchObject({
      platform: 'google_ads',
      label: 'prod',
      client_id: fields.client_id,
      login_customer_id: '1234567890',
      has_client_secret: true,
      has_developer_token: true,
      enabled: true,
      created_by: 'test-operator',
      scopes: ['https://www.googleapis.com/auth/adwords'],
    });

    const listed = await v.json<Array<Record<string, unknown>>>(['apps', 'list']);
    expect(listed).toHaveLength(1);
    expect(Object.keys(listed[0]!).sort()).toEqual(APP_FIELDS);
    // By its id on both databases; the other names a user types (its label, platform/label, the kebab
    // form) are parsing, looked up by the label statements that update and add run on both.
    const refs = ONCE
      ? [added.id as string, 'prod', 'google_ads/prod', 'google-ads/prod']
      : [added.id as string];
    for (const ref of refs) {
      expect(await v.json(['apps', 'show', ref])).toEqual(listed[0]);
    }
    await expectNoSecretsLeaked(v, [fields.client_secret, fields.developer_token]);
  });

  it('adds an app from JSON on standard input; flags win over the file', async () => {
    const v = await vault();
    const fields = {
      label: 'ignored',
      client_id: 'reddit-client',
      client_secret: fakeSecret('reddit'),
      redirect_uri: 'http://localhost:8080/callback',
    };
    const added = await v.json<Record<string, unknown>>(
      [
        'apps',
        'add',
        'reddit-ads',
        '--label',
        'main',
        '--from-file',
        '-',
        '--token-url',
        'http://127.0.0.1:9/token',
      ],
      { input: JSON.stringify(fields) },
    );
    expect(added).toMatchObject({
      platform: 'reddit_ads',
      label: 'main',
      client_id: 'reddit-client',
      token_url: 'http://127.0.0.1:9/token',
      has_client_secret: true,
      has_developer_token: false,
    });
    expect(added.user_agent).toMatch(/^credvault:reddit-client:/);
    await expectNoSecretsLeaked(v, [fields.client_secret]);
  });

  it.runIf(ONCE)(
    'a Reddit app without a User-Agent: added, with a warning saying what Reddit asks for and how to set it',
    async () => {
      const v = await vault();
      const app = {
        label: 'reddit-prod',
        client_id: 'aBcDeFgHiJkLmN',
        client_secret: fakeSecret('reddit'),
        redirect_uri: 'http://localhost:8080/callback',
      };
      const added = await v.cli(['apps', 'add', 'reddit_ads', '--from-file', '-'], {
        input: JSON.stringify(app),
      });
      expect(added.code, added.stderr).toBe(0);
      // What is sent, exactly: the default stored with the app.
      expect(added.stderr).toContain(
        'credvault sends credvault:aBcDeFgHiJkLmN:v1 (credvault app reddit-prod).',
      );
      expect(added.stderr).toContain(
        "credvault apps update reddit-prod --user-agent 'web:reddit-prod:v1 (by /u/",
      );
      // With one given, nothing to say.
      const named = await v.cli(
        ['apps', 'add', 'reddit_ads', '--from-file', '-', '--user-agent', 'web:acme:v1 (by /u/acme)'],
        {
          input: JSON.stringify({ ...app, label: 'reddit-named' }),
        },
      );
      expect(named.code, named.stderr).toBe(0);
      expect(named.stderr).not.toContain('User-Agent');
    },
  );

  it('refuses a duplicate label with exit 7 and writes nothing', async () => {
    const v = await vault();
    const fields = googleApp();
    expect(
      (await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], { input: JSON.stringify(fields) }))
        .code,
    ).toBe(0);
    const before = await v.dump();
    const again = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp({ client_id: 'other' })),
    });
    expect(again.code).toBe(7);
    expect(again.stderr).toContain('an app labelled "prod" already exists for google_ads');
    expect(await v.dump()).toBe(before);
  });

  it.runIf(ONCE)(
    'takes a file that names its platform, and refuses it for another platform’s app',
    async () => {
      const v = await vault();
      const added = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-', '--json'], {
        input: JSON.stringify({ ...googleApp(), platform: 'google_ads' }),
      });
      expect(added.code, added.stderr).toBe(0);
      expect(JSON.parse(added.stdout)).toMatchObject({ platform: 'google_ads', label: 'prod' });
      const before = await v.dump();
      const other = await v.cli(['apps', 'add', 'reddit_ads', '--from-file', '-'], {
        input: JSON.stringify({ ...googleApp({ label: 'elsewhere' }), platform: 'google_ads' }),
      });
      expect(other.code).toBe(2);
      expect(other.stderr).toContain('these app fields are for google_ads, and the app is reddit_ads');
      const update = await v.cli(['apps', 'update', 'prod', '--from-file', '-'], {
        input: JSON.stringify({ platform: 'linkedin_ads', client_id: 'changed' }),
      });
      expect(update.code).toBe(2);
      expect(update.stderr).toContain('these app fields are for linkedin_ads, and the app is google_ads');
      const unknown = await v.cli(['apps', 'update', 'prod', '--from-file', '-'], {
        input: JSON.stringify({ platform: 'tiktok_ads' }),
      });
      expect(unknown.code).toBe(2);
      expect(await v.dump()).toBe(before);
    },
  );

  it.runIf(ONCE)(
    'without a terminal and without secret input, fails with exit 2 naming --from-file',
    async () => {
      const v = await vault();
      const result = await v.cli(['apps', 'add', 'google_ads', '--label', 'x', '--client-id', 'y']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('client secret');
      expect(result.stderr).toContain('--from-file');
      const json = await v.cli(['apps', 'add', 'google_ads', '--label', 'x', '--client-id', 'y', '--json']);
      expect(json.code).toBe(2);
      expect(JSON.parse(json.stderr).error.code).toBe('invalid_input');
      // Under --json too, the message says which input to give.
      expect(JSON.parse(json.stderr).error.message).toContain('--from-file');
    },
  );

  it.runIf(ONCE)(
    'a group named without a command is bad usage: its help, then exit 2 naming its commands (one JSON error under --json)',
    async () => {
      const v = await vault();
      const text = await v.cli(['apps']);
      expect(text.code).toBe(2);
      expect(text.stdout).toBe('');
      expect(text.stderr).toContain('Usage: credvault apps');
      expect(text.stderr).toContain(
        'credvault apps needs a command: add, list, show, update, disable, enable, remove',
      );
      const json = await v.cli(['key', '--json']);
      expect(json.code).toBe(2);
      expect(json.stdout).toBe('');
      expect(JSON.parse(json.stderr)).toEqual({
        error: {
          code: 'invalid_input',
          message: 'credvault key needs a command: generate, rotate, status. See `credvault key --help`.',
        },
      });
      // The group is the one the words reached, global options and their values before it or not.
      const afterOptions = await v.cli(['--actor', 'bob', 'connections', '--json']);
      expect(afterOptions.code).toBe(2);
      expect(JSON.parse(afterOptions.stderr).error.message).toMatch(
        /^credvault connections needs a command: /,
      );
      // credvault alone: every command --help lists, and no hidden one (shell completion's __names).
      const bare = await v.cli([]);
      expect(bare.code).toBe(2);
      expect(bare.stderr).toMatch(/credvault needs a command: init, db, .*, completion\n/);
      expect(bare.stderr).not.toContain('__names');
      // An empty list filtered by platform says which platform had none.
      const none = await v.cli(['apps', 'list', '--platform', 'reddit_ads']);
      expect(none.code).toBe(0);
      expect(none.stdout + none.stderr).toContain(
        'no reddit_ads apps: add one with `credvault apps add reddit_ads',
      );
      const unknown = await v.cli(['help', 'bogus']);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain("unknown command 'bogus'");
      // Asking for help is not an error.
      const help = await v.cli(['apps', '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('Usage: credvault apps');
    },
  );

  it.runIf(ONCE)('reports a malformed JSON file with its position, exit 2, nothing written', async () => {
    const v = await vault();
    const before = await v.dump();
    const file = join(v.root, 'broken.json');
    writeFileSync(file, '{\n  "label": "prod",\n  "client_id": "x"\n  "client_secret": "y"\n}\n');
    const result = await v.cli(['apps', 'add', 'google_ads', '--from-file', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file} is not valid JSON`);
    expect(result.stderr).toContain('line 4, column 3');
    expect(await v.dump()).toBe(before);
  });

  it.runIf(ONCE && existsSync('/usr/bin/script'))(
    'at a terminal, a Microsoft app is asked for its client secret too (Enter: a public client)',
    async () => {
      const v = await vault();
      const child = spawn(
        '/usr/bin/script',
        [
          '-qec',
          `exec '${process.execPath}' '${BIN}' apps add microsoft_ads --label ms --client-id c1 --redirect-uri http://localhost/cb`,
          '/dev/null',
        ],
        { env: { ...v.env } as NodeJS.ProcessEnv, cwd: v.root, stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = '';
      const asked = (text: string) =>
        new Promise<void>((resolve) => {
          const check = () => out.includes(text) && resolve();
          child.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            check();
          });
          check();
        });
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      await asked('client secret (Enter for a public client)');
      child.stdin!.write('ms-secret-1\r');
      await asked('developer token');
      child.stdin!.write('ms-devtoken-1\r');
      expect(await exited, out).toBe(0);
      const app = await v.json<{ has_client_secret: boolean; has_developer_token: boolean }>([
        'apps',
        'show',
        'ms',
      ]);
      expect(app).toMatchObject({ has_client_secret: true, has_developer_token: true });
    },
  );

  it.runIf(ONCE)(
    'requires a developer token for Microsoft and an exact redirect URI for LinkedIn',
    async () => {
      const v = await vault();
      const ms = await v.cli(['apps', 'add', 'microsoft_ads', '--from-file', '-'], {
        input: JSON.stringify({ label: 'm', client_id: 'c' }),
      });
      expect(ms.code).toBe(2);
      expect(ms.stderr).toContain('developer token');
      const li = await v.cli(['apps', 'add', 'linkedin_ads', '--from-file', '-'], {
        input: JSON.stringify({ label: 'l', client_id: 'c', client_secret: 's' }),
      });
      expect(li.code).toBe(2);
      expect(li.stderr).toContain('--redirect-uri');
    },
  );

  it.runIf(ONCE)('refuses plain-http endpoints off loopback', async () => {
    const v = await vault();
    const result = await v.cli(
      ['apps', 'add', 'google_ads', '--from-file', '-', '--token-url', 'http://oauth.example.com/token'],
      { input: JSON.stringify(googleApp()) },
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('token_url must be an https:// URL');
    // A password in an endpoint is refused without being repeated.
    for (const url of ['http://svc:hunter2@proxy.example/token', 'https://svc:hunter2@[bad/token']) {
      const withPassword = await v.cli(
        ['apps', 'add', 'google_ads', '--from-file', '-', '--token-url', url],
        {
          input: JSON.stringify(googleApp()),
        },
      );
      expect(withPassword.code).toBe(2);
      expect(withPassword.stderr).toMatch(/token_url (must not carry credentials|is not a URL)/);
      expect(withPassword.stderr).not.toContain('hunter2');
    }
  });

  it.runIf(ONCE)(
    'reads a --from-file of any size only up to 1 MiB (/dev/zero is refused, not read to the end)',
    async () => {
      const v = await vault();
      const result = await v.cli(['apps', 'add', 'google_ads', '--from-file', '/dev/zero'], {
        timeoutMs: 30_000,
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('/dev/zero is larger than 1 MiB');
    },
  );

  it.runIf(ONCE)(
    'refuses a user agent or developer token that cannot go in an HTTP header (exit 2), from a flag, a file or standard input, writing nothing',
    async () => {
      const v = await vault();
      const reddit = {
        label: 'reddit-app',
        client_id: 'reddit-client',
        client_secret: fakeSecret('reddit'),
        redirect_uri: 'http://localhost:8080/callback',
        user_agent: 'linux:acme-ads:v1 (by /u/ops)',
      };
      // In a file: an emoji. Nothing is added.
      const emoji = await v.cli(['apps', 'add', 'reddit_ads', '--from-file', '-'], {
        input: JSON.stringify({ ...reddit, user_agent: 'linux:acme-ads:v1 🚀 (by /u/ops)' }),
      });
      expect(emoji.code, emoji.stderr).toBe(2);
      expect(emoji.stderr).toContain('user_agent holds a character that cannot be sent in an HTTP header');
      expect(emoji.stderr).toContain('only printable ASCII');
      expect(await v.json(['apps', 'list'])).toEqual([]);
      await v.json(['apps', 'add', 'reddit_ads', '--from-file', '-'], { input: JSON.stringify(reddit) });
      const before = await v.json(['apps', 'show', 'reddit-app']);
      // A flag: an en dash (fetch refuses it at every call), a Latin-1 é (sent as a raw byte).
      for (const agent of ['linux:acme-ads:v1 (by /u/José–ops)', 'linux:acme-ads:v1 (by /u/José)']) {
        const update = await v.cli(['apps', 'update', 'reddit-app', '--user-agent', agent]);
        expect(update.code, update.stderr).toBe(2);
        expect(update.stderr).toContain('user_agent holds a character that cannot be sent in an HTTP header');
      }
      expect(await v.json(['apps', 'show', 'reddit-app'])).toEqual(before);

      // A developer token: a secret, never echoed; in a file, then on standard input.
      const dash = `${fakeSecret('devtoken')}—x`;
      const file = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
        input: JSON.stringify(googleApp({ developer_token: dash })),
      });
      expect(file.code, file.stderr).toBe(2);
      expect(file.stderr).toContain(
        'developer_token holds a character that cannot be sent in an HTTP header',
      );
      const fields = googleApp();
      await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], { input: JSON.stringify(fields) });
      const stdin = await v.cli(['apps', 'update', 'prod', '--new-developer-token'], { input: `${dash}\n` });
      expect(stdin.code, stdin.stderr).toBe(2);
      expect(stdin.stderr).toContain(
        'developer_token holds a character that cannot be sent in an HTTP header',
      );
      for (const out of [file, stdin]) expect(`${out.stdout}${out.stderr}`).not.toContain(dash.slice(0, 20));
      const audit = await v.json<Array<{ action: string }>>(['audit', 'list']);
      // The two apps added, and no update.
      expect(audit.map((a) => a.action).filter((a) => a.startsWith('app.'))).toEqual([
        'app.create',
        'app.create',
      ]);
      await expectNoSecretsLeaked(v, [fields.developer_token, dash.slice(0, 20)]);
    },
  );

  it.runIf(ONCE)('updates, disables, enables and removes an app, auditing each step', async () => {
    const v = await vault();
    const fields = googleApp();
    await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], { input: JSON.stringify(fields) });
    const newSecret = fakeSecret('rotated');
    const updated = await v.json<Record<string, unknown>>(
      ['apps', 'update', 'prod', '--api-version', 'v25', '--new-client-secret'],
      { input: `${newSecret}\n` },
    );
    expect(updated.api_version).toBe('v25');
    const cleared = await v.json<Record<string, unknown>>([
      'apps',
      'update',
      'prod',
      '--clear-developer-token',
    ]);
    expect(cleared.has_developer_token).toBe(false);
    // Settings go back to the platform's default: an empty flag, or null in a file.
    const overridden = await v.json<Record<string, unknown>>([
      'apps',
      'update',
      'prod',
      '--token-url',
      'https://oauth2.sandbox.example/token',
      '--login-customer-id',
      '111-222-3333',
    ]);
    expect(overridden).toMatchObject({
      token_url: 'https://oauth2.sandbox.example/token',
      login_customer_id: '1112223333',
    });
    const reset = await v.json<Record<string, unknown>>(['apps', 'update', 'prod', '--token-url', ''], {});
    expect(reset.token_url).toBeNull();
    const fromFile = await v.json<Record<string, unknown>>(['apps', 'update', 'prod', '--from-file', '-'], {
      input: JSON.stringify({ api_version: null, login_customer_id: null }),
    });
    expect(fromFile).toMatchObject({ api_version: null, login_customer_id: null, token_url: null });
    expect((await v.json<Record<string, unknown>>(['apps', 'disable', 'prod'])).enabled).toBe(false);
    expect((await v.json<Record<string, unknown>>(['apps', 'enable', 'prod'])).enabled).toBe(true);
    const removed = await v.cli(['apps', 'remove', 'prod']);
    expect(removed.code).toBe(0);
    expect((await v.cli(['apps', 'show', 'prod'])).code).toBe(3);

    const audit = await v.json<Array<{ action: string; actor: string; detail: Record<string, unknown> }>>([
      'audit',
      'list',
    ]);
    const actions = audit.map((a) => a.action);
    for (const action of ['app.create', 'app.update', 'app.disable', 'app.enable', 'app.remove']) {
      expect(actions).toContain(action);
    }
    expect(audit.find((a) => a.action === 'app.create')!.actor).toBe('test-operator');
    const updates = audit.filter((a) => a.action === 'app.update').map((a) => a.detail.changed);
    expect(updates).toEqual([
      ['login_customer_id', 'api_version'],
      ['token_url'],
      ['login_customer_id', 'token_url'],
      ['developer_token'],
      ['api_version', 'client_secret'],
    ]);
    await expectNoSecretsLeaked(v, [fields.client_secret, fields.developer_token, newSecret]);
  });
});

describe('master key', () => {
  it('a wrong key gives exit 6 with the key-id message and leaves the database unchanged', async () => {
    const v = await vault();
    const before = await v.dump();
    const keyId = keyIdIn(before);
    // A well-formed master key (as `key generate` makes one) that is not this vault's.
    const wrong = generateMasterKey();
    const result = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp()),
      env: { CREDENTIAL_MASTER_KEY: wrong },
    });
    expect(result.code).toBe(6);
    expect(result.stderr).toMatch(
      new RegExp(`the master key does not match this vault \\(expected key id ${keyId}, got [0-9a-f]{16}\\)`),
    );
    expect(result.stderr).not.toContain(wrong);
    const init = await v.cli(['init'], { env: { CREDENTIAL_MASTER_KEY: wrong } });
    expect(init.code).toBe(6);
    // Neither refused command wrote anything: neither can remove a row, so a row either of them wrote
    // would still be there for this one comparison.
    expect(await v.dump()).toBe(before);
  });

  it.runIf(ONCE)(
    'key status with no key configured on a vault that has data keys: the report says so, then exit 6 "no master key is configured"',
    async () => {
      const v = await vault();
      const added = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
        input: JSON.stringify(googleApp()),
      });
      expect(added.code, added.stderr).toBe(0);
      renameSync(join(v.home, 'master.key'), join(v.home, 'master.key.away'));
      const human = await v.cli(['key', 'status']);
      expect(human.code).toBe(6);
      expect(human.stdout).toMatch(/opens this vault +NO \(no key configured\)/);
      expect(human.stderr).toContain('no master key is configured');
      expect(human.stderr).not.toContain('does not match');
      const json = await v.cli(['key', 'status', '--json']);
      expect(json.code).toBe(6);
      expect(JSON.parse(json.stderr).error).toMatchObject({
        code: 'key_error',
        message: expect.stringContaining('no master key is configured'),
      });
    },
  );

  it.runIf(ONCE)('a malformed key is exit 6 naming where it came from, never echoing it', async () => {
    const v = await vault();
    const result = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp()),
      env: { CREDENTIAL_MASTER_KEY: 'not-a-key-hunter2' },
    });
    expect(result.code).toBe(6);
    expect(result.stderr).toContain('CREDENTIAL_MASTER_KEY');
    expect(result.stderr).not.toContain('hunter2');
  });

  it.runIf(ONCE)(
    'takes the key from CREDENTIAL_MASTER_KEY_FILE and from $CREDENTIALS_DIRECTORY in the contract order',
    async () => {
      const v = await vault();
      const homeKey = join(v.home, 'master.key');
      const expected = (await v.json<{ key_id: string }>(['key', 'status'])).key_id;
      const viaFile = await v.json<{ key_origin: string; key_id: string }>(['key', 'status'], {
        env: { CREDENTIAL_MASTER_KEY_FILE: homeKey },
      });
      expect(viaFile).toMatchObject({ key_origin: homeKey, key_id: expected });
      const credsDir = join(v.root, 'creds');
      const { mkdirSync, copyFileSync } = await import('node:fs');
      mkdirSync(credsDir);
      copyFileSync(homeKey, join(credsDir, 'credential_master_key'));
      const viaSystemd = await v.json<{ key_origin: string }>(['key', 'status'], {
        env: { CREDENTIALS_DIRECTORY: credsDir },
      });
      expect(viaSystemd.key_origin).toBe(join(credsDir, 'credential_master_key'));
      // CREDENTIAL_MASTER_KEY comes before the file.
      const other = (await v.cli(['key', 'generate'])).stdout.trim();
      const envFirst = await v.cli(['key', 'status', '--json'], {
        env: { CREDENTIAL_MASTER_KEY: other, CREDENTIAL_MASTER_KEY_FILE: homeKey },
      });
      // The report, then exit 6: that key does not open this vault.
      expect(JSON.parse(envFirst.stdout)).toMatchObject({
        key_origin: 'CREDENTIAL_MASTER_KEY',
        key_matches_vault: false,
      });
      expect(envFirst.code).toBe(6);
      expect(JSON.parse(envFirst.stderr).error).toMatchObject({
        code: 'key_error',
        message: expect.stringContaining('from CREDENTIAL_MASTER_KEY'),
      });
    },
  );
});

describe('audit', () => {
  /** A vault with an app for each label: its audit log holds the platforms' seed, init, then each app.create. */
  async function vaultWithApps(...labels: string[]) {
    const v = await vault();
    for (const label of labels) {
      await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], {
        input: JSON.stringify(googleApp({ label })),
      });
    }
    return v;
  }

  it('verify finds a row edited in SQL, and rows deleted in the middle and at the end', async () => {
    const v = await vaultWithApps('a', 'b', 'c');
    expect((await v.json<{ ok: boolean }>(['audit', 'verify'])).ok).toBe(true);
    // Three alterations in one chain: the second row edited; the third deleted (the fourth is kept, so
    // that is a gap in the middle); the newest deleted.
    const [edited, middle, last] = await v.session(async (query) => {
      const ids = (await query<{ id: number }>('select id from credential_access_audit order by id')).map(
        (row) => Number(row.id),
      );
      expect(ids.length).toBeGreaterThanOrEqual(5);
      const [edited, middle, last] = [ids[1]!, ids[2]!, ids.at(-1)!];
      await query("update credential_access_audit set actor = 'someone-else' where id = $1", [edited]);
      await query('delete from credential_access_audit where id = $1 or id = $2', [middle, last]);
      return [edited, middle, last];
    });
    const result = await v.cli(['audit', 'verify', '--json']);
    expect(result.code).toBe(7);
    const report = JSON.parse(result.stdout);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual(
      expect.arrayContaining([
        { id: edited, problem: 'row content does not match its hash (edited)' },
        { id: middle + 1, problem: `row ${middle} deleted` },
        { id: last, problem: `the newest row (${last}) deleted` },
      ]),
    );
    // The error names them too.
    const message = JSON.parse(result.stderr).error.message;
    expect(message).toContain(`row ${edited}: row content does not match its hash (edited)`);
    expect(message).toContain(`row ${middle + 1}: row ${middle} deleted`);
    expect(message).toContain(`row ${last}: the newest row (${last}) deleted`);
  });

  it('verify finds records credvault did not write, a time moved by under a millisecond, and a log wiped whole; a record past the head stops what would record (exit 7)', async () => {
    const v = await vaultWithApps('a');
    const insert = `insert into credential_access_audit (id, occurred_at, actor, action, target_type, outcome, detail, prev_hash, hash)
      select $1::bigint, now(), 'mallory', 'token.serve', 'connection', 'success', '{}', last_hash, repeat('a', 64) from audit_head`;
    const [past, moved] = await v.session(async (query) => {
      const [head] = await query<{ last_id: string }>('select last_id from audit_head');
      const past = Number(head!.last_id) + 1;
      await query(insert, [past]);
      await query(insert, [0]);
      // The second row's time, 400 µs later: the same millisecond, so the same hash.
      await query(
        "update credential_access_audit set occurred_at = occurred_at + interval '400 microseconds' where id = 2",
      );
      return [past, 2];
    });
    const result = await v.cli(['audit', 'verify', '--json']);
    expect(result.code, result.stderr).toBe(7);
    expect(JSON.parse(result.stdout).problems).toEqual([
      { id: 0, problem: 'a record credvault did not write (its id is below 1)' },
      { id: moved, problem: 'its time was changed (credvault writes whole milliseconds)' },
      { id: past, problem: 'a record credvault did not write (its id is past the head of the chain)' },
    ]);
    // The next record's id is taken: what would record is refused as that, not as a name taken.
    for (const args of [
      ['apps', 'disable', 'a'],
      ['apps', 'update', 'a', '--label', 'b'],
    ]) {
      const refused = await v.cli(args);
      expect(refused.code, args.join(' ')).toBe(7);
      expect(refused.stderr).toContain('the audit log holds a record past the end of its chain');
      expect(refused.stderr).toContain('credvault audit verify');
    }
    expect((await v.json<Array<{ label: string; enabled: boolean }>>(['apps', 'list']))[0]).toMatchObject({
      label: 'a',
      enabled: true,
    });

    // The whole log and its head deleted: a vault with data keys has records.
    await v.sql('delete from credential_access_audit');
    await v.sql('delete from audit_head');
    const wiped = await v.cli(['audit', 'verify', '--json']);
    expect(wiped.code).toBe(7);
    expect(JSON.parse(wiped.stdout).problems).toEqual([
      { id: 0, problem: 'the audit log is empty, but the vault has data keys: its records were deleted' },
    ]);
  });

  it.runIf(ONCE)('list filters by actor, action, outcome and time, newest first', async () => {
    const v = await vaultWithApps('a');
    await v.json(['apps', 'disable', 'a'], { env: { CREDVAULT_ACTOR: 'alice' } });
    type Row = { id: number; action: string; outcome: string; occurred_at: string };
    const all = await v.json<Row[]>(['audit', 'list']);
    const apps = await v.json<Row[]>(['audit', 'list', '--action', 'app.*', '--outcome', 'success']);
    expect(apps.map((r) => r.action)).toEqual(['app.disable', 'app.create']);
    expect(await v.json(['audit', 'list', '--action', 'app.create'])).toEqual([all[1]]);
    expect(await v.json(['audit', 'list', '--outcome', 'denied'])).toEqual([]);
    // --until: strictly before that time (the newest record's time leaves it out).
    const before = await v.json<Row[]>(['audit', 'list', '--until', all[0]!.occurred_at]);
    expect(before).toEqual(all.filter((r) => r.occurred_at < all[0]!.occurred_at));
    expect(before.length).toBeGreaterThan(0);
    for (const [args, says] of [
      [['--action', 'app.'], '--action must be an action such as token.serve, or a group such as token.*'],
      [['--outcome', 'failed'], '--outcome must be one of success, failure, denied (got "failed")'],
      [['--since', '1h', '--until', '2h'], 'must be later than --since'],
      [['--until', 'tomorrow'], '--until must be an ISO 8601 time'],
    ] as const) {
      const refused = await v.cli(['audit', 'list', ...args]);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain(says);
    }
    const alice = await v.json<Array<{ action: string; actor: string }>>([
      'audit',
      'list',
      '--actor',
      'alice',
    ]);
    expect(alice).toEqual([expect.objectContaining({ action: 'app.disable', actor: 'alice' })]);
    const recent = await v.json<Array<{ id: number }>>(['audit', 'list', '--since', '1h', '--limit', '2']);
    expect(recent).toHaveLength(2);
    expect(recent[0]!.id).toBeGreaterThan(recent[1]!.id);
    expect(await v.json(['audit', 'list', '--since', '2999-01-01T00:00:00Z'])).toEqual([]);
    // A connection that is gone is still found in the log by its id.
    const gone = '0b6f4d3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f';
    expect(await v.json(['audit', 'list', '--connection', gone])).toEqual([]);
    expect((await v.cli(['audit', 'list', '--connection', 'no-such-name'])).code).toBe(3);
  });

  it.runIf(ONCE)(
    'list reads a --since without a zone as UTC, and refuses one it cannot read: a word, a day the month lacks',
    async () => {
      const v = await vaultWithApps('a');
      // No zone is UTC whatever the machine's: five hours ahead in UTC, nothing yet; read as Tokyo's
      // time it would be four hours ago, before the app was added.
      const ahead = new Date(Date.now() + 5 * 3_600_000).toISOString().slice(0, 16);
      const inTokyo = await v.json<unknown[]>(['audit', 'list', '--since', ahead], {
        env: { TZ: 'Asia/Tokyo' },
      });
      expect(inTokyo).toEqual([]);
      expect((await v.cli(['audit', 'list', '--since', 'yesterday'])).code).toBe(2);
      // A day the month lacks is refused, not rolled over.
      const february = await v.cli(['audit', 'list', '--since', '2026-02-30']);
      expect(february.code).toBe(2);
      expect(february.stderr).toContain('--since must be an ISO 8601 time');
    },
  );

  it('keeps an actor with quotes, backslashes and non-ASCII exactly, and the chain verifies', async () => {
    const v = await vaultWithApps('b');
    const actor = 'Zoë "ops" \\ team\tnight ☃';
    await v.json(['apps', 'disable', 'b'], { env: { CREDVAULT_ACTOR: actor } });
    const rows = await v.json<Array<{ action: string; actor: string }>>(['audit', 'list', '--actor', actor]);
    expect(rows).toEqual([expect.objectContaining({ action: 'app.disable', actor })]);
    expect((await v.json<{ ok: boolean }>(['audit', 'verify'])).ok).toBe(true);
  });

  it('fails closed: when the audit row cannot be written, nothing is written', async () => {
    const v = await vault();
    const before = await v.dump();
    expect(before).toMatch(/^oauth_app_credentials: $/m);
    await v.refuseAuditWrites();
    const result = await v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp()),
    });
    expect(result.code).toBe(8);
    // No app (the dump before had none) and nothing else: every table as it was. The trigger that
    // refuses the audit rows is not a row, so it can stay for the comparison.
    expect(await v.dump()).toBe(before);
  });
});

/** Two connections of the app `prod` (no tokens): 1234567890 without a name, 2345678901 `acct-main`. */
async function twoConnections(v: TestVault) {
  await v.sql(
    `insert into ad_account_connections (id, platform, app_id, external_account_id, name, connected_by)
     select gen_random_uuid(), 'google_ads', id, account, name, 'test'
     from oauth_app_credentials, (values ('1234567890', null), ('2345678901', 'acct-main')) as c(account, name)
     where label = 'prod'`,
  );
}

// The shape of errors and the completion scripts (which read no database at all).
describe.runIf(ONCE)('output', () => {
  it('prints errors as JSON on stderr under --json, and usage errors as exit 2', async () => {
    const v = await vault();
    const missing = await v.cli(['apps', 'show', 'nope', '--json']);
    expect(missing.code).toBe(3);
    expect(missing.stdout).toBe('');
    expect(JSON.parse(missing.stderr)).toEqual({
      error: { code: 'not_found', message: 'no app "nope". See `credvault apps list`.' },
    });
    const unknownFlag = await v.cli(['apps', 'list', '--bogus']);
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toContain("unknown option '--bogus'");
  });

  it('says an unexpected failure as exit 1 `internal`, with anything shaped like a token redacted, --verbose too', async () => {
    const v = await vault();
    // A failure no code of credvault's expects, whose text carries a secret (a library echoing what it
    // was given, say): every Date's toISOString throws it.
    const secret = `sk_live_${'a1'.repeat(20)}`;
    const preload = join(v.root, 'boom.cjs');
    writeFileSync(
      preload,
      `Object.defineProperty(Date.prototype, 'toISOString', { value() { throw new Error('boom ${secret}'); } });`,
    );
    const env = { NODE_OPTIONS: `--require ${preload}` };
    const json = await v.cli(['audit', 'list', '--json'], { env });
    expect(json.code, json.stderr).toBe(1);
    expect(json.stdout).toBe('');
    expect(JSON.parse(json.stderr)).toEqual({
      error: { code: 'internal', message: 'unexpected failure: boom [redacted]' },
    });
    const verbose = await v.cli(['audit', 'list', '--verbose'], { env });
    expect(verbose.code).toBe(1);
    expect(verbose.stderr).toContain('error: unexpected failure: boom [redacted]');
    // The stack is there (its frames whole), its message redacted.
    expect(verbose.stderr).toContain(`at Date.value (${preload}:1:`);
    expect(verbose.stderr).not.toContain(secret);
  });

  it('prints completion scripts for bash, zsh and fish that know the commands', async () => {
    const v = await vault();
    const scripts: Record<string, string> = {};
    for (const shell of ['bash', 'zsh', 'fish']) {
      const result = await v.cli(['completion', shell]);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('apps');
      expect(result.stdout).toContain('google_ads');
      scripts[shell] = result.stdout;
    }
    const bash = scripts.bash!;
    expect(bash).toContain('complete -F _credvault credvault');
    expect(bash).toMatch(/"apps"\) words="[^"]*\badd\b/);
    expect((await v.cli(['completion', 'powershell'])).code).toBe(2);

    // What bash offers at each point, in a folder with two files starting with "r".
    const script = join(v.root, 'credvault.bash');
    writeFileSync(script, bash);
    writeFileSync(join(v.root, 'refresh.txt'), '');
    writeFileSync(join(v.root, 'reddit.env'), '');
    const offered = (line: string[]) =>
      execFileSync(
        'bash',
        [
          '-c',
          `source ${script}; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _credvault; printf '%s\\n' "\${COMPREPLY[@]}" | sort | tr '\\n' ' '`,
          'bash',
          ...line,
        ],
        { cwd: v.root, encoding: 'utf8' },
      ).trim();
    expect(offered(['credvault', 'completion', ''])).toContain('bash fish');
    expect(offered(['credvault', 'token', 'get', 'acct', '--format', ''])).toBe(
      'env google-ads-yaml header json raw',
    );
    expect(offered(['credvault', 'connections', 'list', '--status', 'n'])).toBe('needs_reauth');
    // A file option completes file names, not platforms; a free-text value offers nothing.
    expect(offered(['credvault', 'connections', 'add', 'google_ads', '--refresh-token-file', 'r'])).toBe(
      'reddit.env refresh.txt',
    );
    expect(offered(['credvault', 'apps', 'add', 'google_ads', '--label', ''])).toBe('');
    expect(offered(['credvault', 'import', 'google-ads-yaml', 'r'])).toBe('reddit.env refresh.txt');
    // After `--` the words are the command's own: credvault offers nothing of its own.
    expect(offered(['credvault', 'exec', 'acct', '--', 'ls', '--format', ''])).toBe('');
    // No credvault on PATH: no names, and nothing else goes wrong.
    expect(offered(['credvault', 'apps', 'show', 'p'])).toBe('');

    // The vault's own names, asked of the credvault on PATH: apps, clients (a revoked one left out),
    // each where an argument or option names one, and only for the first argument.
    await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp({ label: 'prod' })),
    });
    await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], {
      input: JSON.stringify(googleApp({ label: 'preview' })),
    });
    for (const name of ['ci', 'cron', 'old'])
      expect((await v.cli(['clients', 'create', name, '--all'])).code).toBe(0);
    expect((await v.cli(['clients', 'revoke', 'old'])).code).toBe(0);
    const bin = join(v.root, 'bin');
    mkdirSync(bin);
    symlinkSync(BIN, join(bin, 'credvault'));
    const env = { ...process.env, ...v.env, PATH: `${bin}:${process.env.PATH}` };
    const named = (line: string[]) =>
      execFileSync(
        'bash',
        [
          '-c',
          // As bash sets them: the line as typed too (COMP_WORDS is split at ':' and '=' as well).
          `source ${script}; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=\${#COMP_LINE}; _credvault; printf '%s\n' "\${COMPREPLY[@]}" | sort | tr '\n' ' '`,
          'bash',
          ...line,
        ],
        { cwd: v.root, encoding: 'utf8', env },
      ).trim();
    expect(named(['credvault', 'apps', 'show', 'g'])).toBe('google_ads/preview google_ads/prod');
    expect(named(['credvault', 'apps', 'update', 'google_ads/prod', 'g'])).toBe('');
    expect(named(['credvault', 'connect', 'google_ads', '--app', 'google_ads/pre'])).toBe(
      'google_ads/preview',
    );
    expect(named(['credvault', 'clients', 'revoke', 'c'])).toBe('ci cron');
    expect(named(['credvault', 'clients', 'revoke', 'o'])).toBe('');
    // Connections by name, and one without a name by its platform:account, which bash splits into
    // three words at the ':' (COMP_WORDBREAKS): the line is what is completed, and the offers lose
    // what bash keeps before the ':'. Before, such a connection was not offered at all.
    await twoConnections(v);
    const asBashSplits = (line: string) =>
      execFileSync(
        'bash',
        [
          '-c',
          `source ${script}; COMP_LINE="$1"; COMP_POINT=\${#COMP_LINE}; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _credvault; printf '%s\n' "\${COMPREPLY[@]}" | sort | tr '\n' ' '`,
          'bash',
          line,
          ...line.split(' ').flatMap((word) => word.split(/(:)/)),
        ],
        { cwd: v.root, encoding: 'utf8', env },
      ).trim();
    expect(asBashSplits('credvault token get ')).toMatch(/ acct-main google_ads:1234567890$/);
    expect(asBashSplits('credvault token get g')).toBe('google_ads:1234567890');
    expect(asBashSplits('credvault token get google_ads:12')).toBe('1234567890');
    expect(asBashSplits('credvault token get google_ads:')).toBe('1234567890');
    expect(asBashSplits('credvault audit list --connection google_ads:1')).toBe('1234567890');
    // An argument after the connection is not a connection: nothing of the vault's offered.
    expect(asBashSplits('credvault exec google_ads:1234567890 a')).toBe('');
    // --home on the line is the vault asked (on the embedded database): another one has no apps.
    if (!v.databaseUrl)
      for (const home of [['--home', join(v.root, 'elsewhere')], [`--home=${join(v.root, 'elsewhere')}`]])
        expect(named(['credvault', ...home, 'apps', 'show', 'g']), home.join(' ')).toBe('');
    // What the scripts call prints no secret, wrote no audit row, and is not in --help.
    const before = (await v.json<unknown[]>(['audit', 'list', '--limit', '1000'])).length;
    const names = await v.cli(['__names', 'apps']);
    expect(names).toMatchObject({ code: 0, stdout: 'google_ads/preview\ngoogle_ads/prod\n' });
    expect((await v.json<unknown[]>(['audit', 'list', '--limit', '1000'])).length).toBe(before);
    expect((await v.cli(['--help'])).stdout).not.toContain('__names');
  });

  // CI installs both shells (CREDVAULT_REQUIRE_SHELLS=1); elsewhere a missing one is reported skipped.
  it.for(['zsh', 'fish'])(
    'the %s completion script passes the shell’s own -n check, and completes in that shell',
    async (shell, { skip }) => {
      const path = ['/usr/bin', '/bin'].map((d) => join(d, shell)).find((p) => existsSync(p));
      if (!path && process.env.CREDVAULT_REQUIRE_SHELLS === '1') throw new Error(`${shell} is not installed`);
      if (!path) return void skip(`${shell} is not installed here`);
      const v = await vault();
      const file = join(v.root, `credvault.${shell}`);
      const script = (await v.cli(['completion', shell])).stdout;
      writeFileSync(file, script);
      execFileSync(path, ['-n', file]);
      const env = { PATH: process.env.PATH, HOME: v.root };
      if (shell === 'fish') {
        // Commands still complete after a global option's value (fish's __fish_use_subcommand took
        // the value for the command).
        const offered = (line: string) =>
          execFileSync(path, ['-c', `source ${file}; complete -C'${line}'`], {
            encoding: 'utf8',
            env,
            cwd: v.root,
          })
            .split('\n')
            .map((row) => row.split('\t')[0]);
        for (const line of [
          'credvault --home /tmp ',
          'credvault --database-url postgres://x/y ',
          'credvault --json ',
        ])
          expect(offered(line), line).toContain('audit');
        expect(offered('credvault --home /tmp apps ')).toContain('add');
        expect(offered('credvault --home ')).toContain('credvault.fish');
        // The vault's names, from the credvault on PATH: the first argument and --app only.
        await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], {
          input: JSON.stringify(googleApp({ label: 'prod' })),
        });
        const bin = join(v.root, 'bin');
        mkdirSync(bin);
        symlinkSync(BIN, join(bin, 'credvault'));
        const named = (line: string) =>
          execFileSync(path, ['-c', `source ${file}; complete -C'${line}'`], {
            encoding: 'utf8',
            env: { ...process.env, ...v.env, PATH: `${bin}:${process.env.PATH}` },
            cwd: v.root,
          })
            .split('\n')
            .map((row) => row.split('\t')[0])
            .filter(Boolean);
        expect(named('credvault apps show ')).toEqual(['google_ads/prod']);
        expect(named('credvault --actor me apps show ')).toEqual(['google_ads/prod']);
        expect(named('credvault apps show google_ads/prod ')).toEqual([]);
        expect(named('credvault connect google_ads --app ')).toEqual(['google_ads/prod']);
        await twoConnections(v);
        expect(named('credvault token get ')).toEqual(['acct-main', 'google_ads:1234567890']);
        expect(named('credvault token get google_ads:')).toEqual(['google_ads:1234567890']);
        return;
      }
      // Saved on $fpath as _credvault, as its #compdef line invites: compinit registers it, and the
      // first completion (the one that loads the file) offers the commands too, not only the later
      // ones. A stand-in compadd prints what would be offered (no completion widget runs here).
      const dir = join(v.root, 'zfunc');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, '_credvault'), script);
      const out = execFileSync(
        path,
        [
          '-f',
          '-c',
          `fpath=(${dir} $fpath); autoload -Uz compinit; compinit -u -D
print -r -- "before=$_comps[credvault]"
compadd() { print -r -- "compadd $*" }
words=(credvault aud); CURRENT=2; _credvault
print -r -- "after=$_comps[credvault]"`,
        ],
        { encoding: 'utf8', env },
      );
      expect(out).toMatch(/^before=_credvault$/m);
      expect(out).toMatch(/^compadd .*\baudit\b/m);
      expect(out).toMatch(/^after=_bash_complete -F _credvault$/m);
      // Sourced (as the README says), the script only registers itself.
      const sourced = execFileSync(
        path,
        [
          '-f',
          '-c',
          `compadd() { print -r -- "compadd $*" }; source ${file}; print -r -- "comps=$_comps[credvault]"`,
        ],
        { encoding: 'utf8', env },
      );
      expect(sourced).toBe('comps=_bash_complete -F _credvault\n');
      // The vault's names, from the credvault on PATH. Before, none: the script's \`path\` variable is
      // zsh's PATH (no credvault found), and zsh's read has no -a (an error printed at each TAB).
      await v.json(['apps', 'add', 'google_ads', '--from-file', '-'], {
        input: JSON.stringify(googleApp({ label: 'prod' })),
      });
      await twoConnections(v);
      const bin = join(v.root, 'bin');
      mkdirSync(bin);
      symlinkSync(BIN, join(bin, 'credvault'));
      const named = (words: string[]) =>
        execFileSync(
          path,
          [
            '-f',
            '-c',
            `fpath=(${dir} $fpath); autoload -Uz compinit; compinit -u -D
compadd() { print -r -- "compadd $*" }
words=(${words.map((w) => `'${w}'`).join(' ')}); CURRENT=${words.length}; _credvault 2>&1`,
          ],
          {
            encoding: 'utf8',
            env: { ...process.env, ...v.env, HOME: v.root, PATH: `${bin}:${process.env.PATH}` },
          },
        );
      const apps = named(['credvault', 'apps', 'show', 'g']);
      expect(apps).toMatch(/^compadd .* google_ads\/prod$/m);
      expect(apps).not.toMatch(/bad option|modifier|not found/);
      expect(named(['credvault', 'token', 'get', 'google_ads:1'])).toMatch(
        /^compadd .* acct-main google_ads:1234567890$/m,
      );
    },
  );
});

describe.runIf(DB_KIND === 'pglite')('an init stopped early', () => {
  it('leaves a pgdata folder that no command makes into a database: exit 8 saying to run init, which finishes it', async () => {
    const v = await vault({ initialized: false });
    const pgdata = join(v.home, 'pgdata');
    mkdirSync(pgdata, { recursive: true, mode: 0o700 });
    const listed = await v.cli(['connections', 'list']);
    expect(listed.code, listed.stderr).toBe(8);
    expect(listed.stderr).toContain('holds an unfinished embedded database');
    expect(listed.stderr).toContain('Run `credvault init` to finish it.');
    // Before, a 39 MB database was made there, then "not migrated".
    expect(readdirSync(pgdata)).toEqual([]);
    expect((await v.cli(['init'])).code).toBe(0);
    expect((await v.cli(['connections', 'list'])).code).toBe(0);
  });
});

// Refused while reading the URL, before any database is opened.
describe.runIf(ONCE)('DATABASE_URL', () => {
  it('given as --database-url with a password (in it or as ?password=) is refused (exit 2): ps shows it to every user', async () => {
    const v = await vault();
    for (const url of [
      'postgres://ops:hunter2-secret@127.0.0.1:5432/credvault',
      'postgres://ops@127.0.0.1:5432/credvault?sslmode=require&password=hunter2-secret',
    ]) {
      const result = await v.cli(['--database-url', url, 'apps', 'list', '--json']);
      expect(result.code, result.stderr).toBe(2);
      expect(JSON.parse(result.stderr).error.message).toBe(
        '--database-url carries a password, which every user of this machine can read in its process list. Give the URL in DATABASE_URL instead, or leave the password out of it and set PGPASSWORD.',
      );
      expect(result.stderr).not.toContain('hunter2');
    }
    // Without a password it is taken (this vault's own database, on PostgreSQL).
    if (v.databaseUrl) {
      const { DATABASE_URL: _, ...env } = v.env;
      const apps = await v.cli(['--database-url', v.databaseUrl, 'apps', 'list', '--json'], { env });
      expect(apps.code, apps.stderr).toBe(0);
    }
  });

  it('that cannot be reached says what to check, naming the flag too: the server, the database, the user', async () => {
    const v = await vault();
    const { DATABASE_URL: _, ...env } = v.env;
    const refused = await v.cli(['--database-url', 'postgres://ops@127.0.0.1:1/credvault', 'apps', 'list'], {
      env,
    });
    expect(refused.code, refused.stderr).toBe(8);
    expect(refused.stderr).toContain(
      'Check the database URL (DATABASE_URL or --database-url) and that PostgreSQL is running.',
    );
    // Against the suite's server: a database that is not there, a user it does not know.
    if (v.databaseUrl) {
      const missing = new URL(v.databaseUrl);
      missing.pathname = '/credvault_no_such_database';
      const notThere = await v.cli(['--database-url', missing.href, 'apps', 'list'], { env });
      expect(notThere.code, notThere.stderr).toBe(8);
      expect(notThere.stderr).toContain('database "credvault_no_such_database" does not exist');
      expect(notThere.stderr).toContain(
        'Create the database (for example with createdb), then run `credvault init`',
      );
      const stranger = new URL(v.databaseUrl);
      stranger.username = 'credvault_no_such_user';
      const unknown = await v.cli(['--database-url', stranger.href, 'apps', 'list'], { env });
      expect(unknown.code, unknown.stderr).toBe(8);
      expect(unknown.stderr).toContain('Check the user and password (in the database URL');
    }
  });

  it('of another kind of database is input to change (exit 2), named without its password', async () => {
    const v = await vault();
    const result = await v.cli(['platforms', 'list'], {
      env: { DATABASE_URL: 'mysql://ops:hunter2-secret@db.internal:3306/credvault' },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('DATABASE_URL must start with postgres:// or postgresql://');
    expect(result.stderr).toContain('db.internal');
    expect(result.stderr).not.toContain('hunter2-secret');
  });

  it('that cannot be read (a /, ?, # or % left unencoded in the password, a port over 65535) is exit 2 saying what to change, never the password', async () => {
    const v = await vault();
    const cases: Array<[string, string, string]> = [
      [
        'postgres://ops:hunter2/secret@db.internal:5432/credvault',
        'a /, ? or # in its user name or password',
        '/ as %2F',
      ],
      [
        'postgres://ops:hunter2#secret@db.internal:5432/credvault',
        'a /, ? or # in its user name or password',
        '# as %23',
      ],
      [
        'postgres://ops:4242#secret@db.internal:5432/credvault',
        'a /, ? or # in its user name or password',
        '# as %23',
      ],
      [
        'postgres://ops:hunter2?secret@db.internal:5432/credvault',
        'a /, ? or # in its user name or password',
        '? as %3F',
      ],
      [
        'postgres://ops:50%hunter2-secret@db.internal:5432/credvault',
        'a % in its user name, password or host that is not percent-encoding',
        '% as %25',
      ],
      [
        'postgres://ops:hunter2-secret@db.internal:70000/credvault',
        'DATABASE_URL has port 70000, over the highest there is (65535)',
        '5432',
      ],
    ];
    for (const [url, problem, fix] of cases) {
      const result = await v.cli(['apps', 'list'], { env: { DATABASE_URL: url } });
      expect(result.code, `${url}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toContain('DATABASE_URL');
      expect(result.stderr).toContain(problem);
      expect(result.stderr).toContain(fix);
      expect(result.stderr).not.toContain('unexpected failure');
      expect(result.stderr).not.toContain('secret');
      expect(result.stderr).not.toContain('hunter2');
    }
  });

  it('with an IPv6 literal host ([::1]) connects to that address, not to a host named "["', async () => {
    const v = await vault();
    const port = process.env.CREDVAULT_TEST_DATABASE_URL
      ? new URL(process.env.CREDVAULT_TEST_DATABASE_URL).port || '5432'
      : '5432';
    const result = await v.cli(['apps', 'list'], {
      env: { DATABASE_URL: `postgres://postgres@[::1]:${port}/credvault_nowhere` },
    });
    expect(result.stderr).not.toContain('ENOTFOUND');
    // PostgreSQL listening on ::1 answers (the database does not exist: exit 8); else the address is
    // refused, by name.
    expect(result.code, result.stderr).toBe(8);
    expect(result.stderr).toMatch(/ECONNREFUSED ::1|credvault_nowhere/);
  });
});

// Parsing what the user gave: refused before anything is written (the one app the last test adds is
// stored by the statements every apps add runs on both databases).
describe.runIf(ONCE)(
  'empty and odd values (an unset variable in a script, a file saved by another editor)',
  () => {
    it('are refused with exit 2 naming the flag, not taken for "no filter", "never" or 0', async () => {
      const v = await vault();
      const refused = async (args: string[], flag: string) => {
        const result = await v.cli(args);
        expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(2);
        expect(result.stderr).toContain(flag);
        expect(result.stdout).toBe('');
      };
      // A client token with an empty --expires-in was made to never expire.
      await refused(['clients', 'create', 'ci', '--all', '--expires-in', ''], '--expires-in');
      expect(await v.json<unknown[]>(['clients', 'list'])).toEqual([]);
      await refused(['token', 'get', 'nope', '--min-ttl', ''], '--min-ttl');
      await refused(['token', 'get', 'nope', '--min-ttl', '0x3c'], '--min-ttl');
      await refused(['connections', 'list', '--platform', ''], '--platform');
      await refused(['connections', 'list', '--status', ' '], '--status');
      await refused(['apps', 'list', '--platform', ''], '--platform');
      await refused(['audit', 'list', '--actor', ''], '--actor');
      await refused(['audit', 'list', '--since', ''], '--since');
      await refused(['audit', 'list', '--connection', ''], '--connection');
    });

    it('a file that cannot be read is named with the reason and what to do: missing, a folder', async () => {
      const v = await vault();
      const missing = await v.cli(['apps', 'add', 'google_ads', '--from-file', join(v.root, 'nope.json')]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('nope.json (--from-file): no such file');
      const folder = await v.cli(['apps', 'add', 'google_ads', '--from-file', v.root]);
      expect(folder.code).toBe(2);
      expect(folder.stderr).toContain(`cannot read ${v.root} (--from-file): it is a folder`);
      expect(folder.stderr).toContain('Give --from-file the file inside it.');
    });

    it('an app file: a control character in a field is refused naming the field; a byte-order mark is not', async () => {
      const v = await vault();
      const add = (platform: string, fields: Record<string, unknown>) =>
        v.cli(['apps', 'add', platform, '--from-file', '-'], { input: JSON.stringify(fields) });
      const ua = await add('reddit_ads', {
        label: 'nl',
        client_id: 'c1',
        client_secret: 's1',
        redirect_uri: 'http://localhost:8080/callback',
        user_agent: 'web:acme:v1\r\nX-Injected: 1',
      });
      expect(ua.code, ua.stderr).toBe(2);
      expect(ua.stderr).toContain('user_agent contains a control character');
      const nul = await add('google_ads', { label: 'nul', client_id: 'c\u0000d', client_secret: 's' });
      expect(nul.code, nul.stderr).toBe(2);
      expect(nul.stderr).toContain('client_id contains a control character');
      expect(await v.json<unknown[]>(['apps', 'list'])).toEqual([]);
      const file = join(v.root, 'bom.json');
      writeFileSync(file, `\uFEFF${JSON.stringify({ label: 'bom', client_id: 'c2', client_secret: 's2' })}`);
      const bom = await v.cli(['apps', 'add', 'google_ads', '--from-file', file]);
      expect(bom.code, bom.stderr).toBe(0);
    });
  },
);
