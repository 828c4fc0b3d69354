import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateMasterKey } from '../../src/crypto/local-key.js';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../doubles/index.js';
import { seedConnections, spawnDaemonOnAnyPort, startDaemon } from '../helpers/daemon.js';
import { addAppFor } from '../helpers/flows.js';
import { createVault, DB_KIND, ONCE, type TestVault } from '../helpers/vault.js';

/** `credvault doctor`: every check reported with what to do, the contract's exit code, nothing changed. */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

interface Report {
  ok: boolean;
  checks: Array<{ name: string; status: string; message: string; fix: string | null }>;
}

async function doctor(v: TestVault, env: Record<string, string | undefined> = {}) {
  const result = await v.cli(['doctor', '--json'], { env });
  const report = JSON.parse(result.stdout) as Report;
  const by = Object.fromEntries(report.checks.map((c) => [c.name, c]));
  return { ...result, report, by };
}

async function vault(options?: { initialized?: boolean }) {
  const v = await createVault(options);
  cleanups.push(() => v.destroy());
  return v;
}

describe('credvault doctor', () => {
  it('reports a healthy vault, connections that need a person, and the daemon running, gone or killed', async () => {
    const v = await vault();
    const fresh = await doctor(v);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.report.checks.map((c) => [c.name, c.status])).toEqual([
      ['database', 'ok'],
      ['migrations', 'ok'],
      ['key', 'ok'],
      ['daemon', 'warning'],
      ['connections', 'ok'],
      ['apps', 'ok'],
    ]);
    expect(fresh.report.ok).toBe(true);
    expect(fresh.by.key!.message).toMatch(/^local key [0-9a-f]+ .*opens the vault/);
    expect(fresh.by.daemon!.fix).toContain('credvault daemon');

    const double = await startGoogleDouble();
    cleanups.push(() => double.close());
    const app = await addAppFor(v, 'google_ads', double as never);
    await seedConnections(v, double as never, app.label, app.clientId, GOOGLE_ADWORDS_SCOPE, 2, 3600);
    await v.sql(
      "update ad_account_connections set status = 'needs_reauth' where external_account_id = 'seed-0'",
    );
    const attention = await doctor(v);
    expect(attention.code).toBe(0);
    expect(attention.by.connections).toMatchObject({
      status: 'warning',
      message: '2 connections: 1 need a person now',
    });
    expect(attention.by.connections!.fix).toContain('credvault status');

    // A daemon on a port the system picks: its run file says which, and the doctor reaches it there.
    const { child: daemon, port, logs } = await spawnDaemonOnAnyPort(v, '127.0.0.1');
    cleanups.push(async () => daemon.kill('SIGKILL'));
    expect(port).toBeGreaterThan(0);
    expect(logs()).toContain(`listening on 127.0.0.1:${port} `);
    const running = await doctor(v);
    expect(running.code, running.stderr).toBe(0);
    expect(running.by.daemon).toMatchObject({ status: 'ok' });
    expect(running.by.daemon!.message).toContain(`running (pid ${daemon.pid}, 127.0.0.1:${port})`);
    expect(running.by.database!.message).toContain(
      DB_KIND === 'pglite' ? 'through the daemon' : 'PostgreSQL',
    );

    daemon.kill('SIGKILL');
    await new Promise((resolve) => daemon.once('close', resolve));
    const killed = await doctor(v, { CREDVAULT_LOCK_TIMEOUT: '60' });
    expect(killed.code, killed.stderr).toBe(0);
    expect(killed.by.daemon).toMatchObject({ status: 'warning' });
    expect(killed.by.daemon!.message).toContain('did not shut down cleanly');

    // After a crash and a reboot the run file's pid may be another process of the same user's: not
    // a daemon that does not answer (exit 5), a run file left behind.
    const other = spawn('sleep', ['30']);
    cleanups.push(async () => other.kill('SIGKILL'));
    const runFile = join(v.home, 'run', 'daemon.json');
    const stale = JSON.parse(readFileSync(runFile, 'utf8')) as { pid: number };
    writeFileSync(runFile, JSON.stringify({ ...stale, pid: other.pid }), { mode: 0o600 });
    const reused = await doctor(v, { CREDVAULT_LOCK_TIMEOUT: '60' });
    expect(reused.code, reused.stderr).toBe(0);
    expect(reused.by.daemon!.message).toContain('did not shut down cleanly');
  });

  it.runIf(ONCE)(
    'a master key file every user may read fails the key check (exit 6); its group or an open folder is a warning',
    async () => {
      const v = await vault();
      const key = join(v.home, 'master.key');
      chmodSync(key, 0o644);
      const open = await doctor(v);
      expect(open.code).toBe(6);
      expect(open.by.key).toMatchObject({ status: 'failed', fix: `chmod 600 ${key}` });
      expect(open.by.key!.message).toContain('is open to every user (mode 0644)');
      // key status, the command an operator runs to check the key, says so too (and still answers).
      const status = await v.cli(['key', 'status', '--json']);
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ key_matches_vault: true });
      expect(status.stderr).toContain(
        `warning: the master key file ${key} is open to every user (mode 0644): whoever reads it can decrypt every secret in the vault. Run: chmod 600 ${key}`,
      );
      // So does the daemon, once, as it starts.
      const daemon = await startDaemon(v);
      try {
        expect(daemon.logs()).toContain(`the master key file ${key} is open to every user (mode 0644)`);
        expect(daemon.logs()).toContain('key_file_exposed');
      } finally {
        await daemon.stop();
      }
      // Open to its group only: a warning (a deployment may share the key with a service's group).
      chmodSync(key, 0o640);
      const group = await doctor(v);
      expect(group.code, group.stderr).toBe(0);
      expect(group.by.key).toMatchObject({ status: 'warning', fix: `chmod 600 ${key}` });
      // systemd's credential (0440 where an ACL lets the service's user read it) is systemd's to guard.
      const credentials = join(v.root, 'credentials');
      mkdirSync(credentials);
      copyFileSync(key, join(credentials, 'credential_master_key'));
      chmodSync(join(credentials, 'credential_master_key'), 0o440);
      const systemd = await doctor(v, { CREDENTIALS_DIRECTORY: credentials });
      expect(systemd.by.key, systemd.stderr).toMatchObject({ status: 'ok' });
      expect(systemd.by.key!.message).toContain(join(credentials, 'credential_master_key'));
      chmodSync(key, 0o600);
      chmodSync(v.home, 0o755);
      const folder = await doctor(v);
      expect(folder.code, folder.stderr).toBe(0);
      expect(folder.by.key).toMatchObject({ status: 'warning', fix: `chmod 700 ${v.home}` });
      chmodSync(v.home, 0o700);
      expect((await doctor(v)).by.key!.status).toBe('ok');
    },
  );

  // What doctor reads of the apps is one list: once, on PostgreSQL when there.
  it.runIf(ONCE)(
    'warns of an app on an API version its platform no longer serves, or stops serving within 90 days',
    async () => {
      const v = await vault();
      const add = async (platform: string, label: string, version: string | null) => {
        const file = {
          client_id: `${label}-client`,
          client_secret: `secret-of-${label}`,
          redirect_uri: 'http://localhost:8080/callback',
        };
        const args = ['apps', 'add', platform, '--label', label, '--from-file', '-'];
        const added = await v.cli(version ? [...args, '--api-version', version] : args, {
          input: JSON.stringify(file),
        });
        expect(added.code, added.stderr).toBe(0);
        return added.stderr;
      };
      await add('google_ads', 'current', null); // v26: no end announced
      await add('linkedin_ads', 'next-century', '209912');
      const fine = await doctor(v);
      expect(fine.by.apps).toEqual({
        name: 'apps',
        status: 'ok',
        message: '2 enabled apps, none on an API version near its end',
        fix: null,
      });

      await add('google_ads', 'old', 'v21'); // Google ended v21 on 2026-08-05
      // Older than any version listed: ended before v21 did (Google answers it with a 404).
      expect(await add('google_ads', 'older', 'v20')).toContain(
        'google_ads/older uses API version v20, which the platform no longer serves (it is older than v21, which ended on 2026-08-05)',
      );
      await add('linkedin_ads', 'ancient', '202411'); // LinkedIn serves a month's version at least a year
      await add('linkedin_ads', 'parked', '202411');
      expect((await v.cli(['apps', 'disable', 'linkedin_ads/parked'])).code).toBe(0);
      const warned = await doctor(v);
      expect(warned.code, warned.stderr).toBe(0);
      expect(warned.report.ok).toBe(true);
      expect(warned.by.apps!.status).toBe('warning');
      expect(warned.by.apps!.message).toBe(
        'google_ads/old uses API version v21, which the platform no longer serves (since 2026-08-05); ' +
          'google_ads/older uses API version v20, which the platform no longer serves (it is older than v21, which ended on 2026-08-05); ' +
          'linkedin_ads/ancient uses LinkedIn-Version 202411, which LinkedIn promises to serve only until about 2025-11-01 (a year from its month) and may no longer serve',
      );
      expect(warned.by.apps!.fix).toContain(
        "`credvault apps update google_ads/old --api-version ''` moves it to the default v26",
      );
      expect(warned.by.apps!.fix).toContain(
        "`credvault apps update linkedin_ads/ancient --api-version ''` moves it to the default 202608",
      );
      expect(warned.by.apps!.fix).toContain('tokens still refresh');

      const human = await v.cli(['doctor']);
      expect(human.code).toBe(0);
      expect(human.stdout).toMatch(
        /\n! apps +google_ads\/old uses API version v21, .*\n +→ `credvault apps update google_ads\/old/,
      );
    },
  );

  it('an uninitialized vault: exit 8, what to do for each problem, and nothing made', async () => {
    const v = await vault({ initialized: false });
    const result = await doctor(v);
    expect(result.code).toBe(8);
    expect(JSON.parse(result.stderr).error.code).toBe('database_error');
    expect(result.report.ok).toBe(false);
    if (DB_KIND === 'pglite') {
      expect(result.by.database).toMatchObject({ status: 'failed' });
      expect(result.by.database!.fix).toContain('credvault init');
      expect(result.by.migrations!.status).toBe('skipped');
      expect(existsSync(v.home)).toBe(false);
    } else {
      expect(result.by.database!.status).toBe('ok');
      expect(result.by.migrations).toMatchObject({
        status: 'failed',
        fix: expect.stringContaining('db migrate'),
      });
      const tables = await v.sql("select 1 from information_schema.tables where table_schema = 'public'");
      expect(tables).toEqual([]);
    }
    expect(result.by.key).toMatchObject({ status: 'failed', message: 'no master key is configured' });
    expect(result.by.connections!.status).toBe('skipped');
    expect(result.by.apps!.status).toBe('skipped');

    const human = await v.cli(['doctor']);
    expect(human.code).toBe(8);
    expect(human.stdout).toMatch(/✗ key +no master key is configured\n +→ Set CREDENTIAL_MASTER_KEY/);
    expect(human.stderr).toContain('2 checks failed: ');
  });

  it.runIf(DB_KIND === 'pglite' && process.getuid?.() === 0)(
    "another user's embedded vault: doctor, apps list and daemon refuse (exit 8) naming its owner and the fix, and leave its files as they were",
    async () => {
      const v = await vault();
      // The vault of a service user (nobody, uid 65534) whose daemon is down; these tests run as root.
      const files = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? [join(dir, e.name), ...files(join(dir, e.name))] : [join(dir, e.name)],
        );
      for (const path of [v.home, ...files(v.home)]) chownSync(path, 65534, 65534);
      const state = () =>
        files(v.home).map((path) => {
          const stat = statSync(path);
          return `${path} ${stat.uid} ${(stat.mode & 0o777).toString(8)} ${stat.mtimeMs}`;
        });
      const before = state();

      const result = await doctor(v);
      expect(result.code).toBe(8);
      expect(result.by.database).toMatchObject({ status: 'failed' });
      expect(result.by.database!.message).toContain(`the vault at ${v.home} belongs to nobody (uid 65534)`);
      expect(result.by.database!.fix).toContain('sudo -u nobody credvault');
      expect(result.by.migrations!.status).toBe('skipped');

      const list = await v.cli(['apps', 'list']);
      expect(list.code).toBe(8);
      expect(list.stderr).toContain('belongs to nobody (uid 65534)');
      expect(list.stderr).toContain('sudo -u nobody credvault');

      const daemon = await v.cli(['daemon', '--listen', '127.0.0.1:0'], { timeoutMs: 20_000 });
      expect(daemon.code).toBe(8);
      expect(daemon.stderr).toContain('belongs to nobody (uid 65534)');

      expect(state()).toEqual(before);
    },
  );

  it('a wrong master key: exit 6 naming both key ids, and the database unchanged', async () => {
    const v = await vault();
    const before = await v.dump();
    const key = generateMasterKey(); // what `credvault key generate` prints
    const result = await doctor(v, { CREDENTIAL_MASTER_KEY: key });
    expect(result.code).toBe(6);
    expect(JSON.parse(result.stderr).error).toEqual({ code: 'key_error', message: '1 check failed: key' });
    expect(result.by.key!.status).toBe('failed');
    expect(result.by.key!.message).toMatch(
      /^the master key does not match this vault \(expected key id [0-9a-f]+, got [0-9a-f]+\)/,
    );
    expect(result.by.database!.status).toBe('ok');
    expect(await v.dump()).toEqual(before);
    expect(JSON.stringify(result.report)).not.toContain(key);
  });
});
