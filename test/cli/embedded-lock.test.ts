import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serveEmbedded } from '../../src/daemon/embedded.js';
import { acquireDatabaseLock } from '../../src/db/lock.js';
import { BIN, ROOT } from '../helpers/paths.js';
import { fakeSecret } from '../helpers/secrets.js';
import { createVault, DB_KIND, type TestVault } from '../helpers/vault.js';

const vaults: TestVault[] = [];
afterEach(async () => {
  await Promise.all(vaults.splice(0).map((v) => v.destroy()));
});

const app = (label: string) =>
  JSON.stringify({
    label,
    client_id: `client-${label}`,
    client_secret: fakeSecret('s'),
    developer_token: fakeSecret('d'),
  });

describe.runIf(DB_KIND === 'pglite')('the embedded database shared by several processes', () => {
  it('serializes processes started at once: every change lands, nothing is corrupted', async () => {
    const v = await createVault();
    vaults.push(v);
    const labels = ['one', 'two', 'three'];
    const results = await Promise.all(
      labels.map((label) =>
        v.cli(['apps', 'add', 'google_ads', '--from-file', '-'], {
          input: app(label),
          env: { CREDVAULT_LOCK_TIMEOUT: '60' },
        }),
      ),
    );
    expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
    const apps = await v.json<Array<{ label: string }>>(['apps', 'list']);
    expect(apps.map((a) => a.label).sort()).toEqual(['one', 'three', 'two']);
    expect((await v.json<{ ok: boolean; rows: number }>(['audit', 'verify'])).ok).toBe(true);
  });

  it('a process that cannot get the lock in time fails with exit 8 naming the holder', async () => {
    const v = await createVault();
    vaults.push(v);
    const lock = await acquireDatabaseLock(v.home, 1000, 'test');
    try {
      const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
      expect(result.code).toBe(8);
      expect(result.stderr).toContain(`is in use by process ${process.pid}`);
      expect(result.stderr).toContain('gave up after 1s');
      expect(result.stderr).toContain('CREDVAULT_LOCK_TIMEOUT');
    } finally {
      lock.release();
    }
    expect((await v.cli(['apps', 'list'])).code).toBe(0);
  });

  it('a command waiting for the lock of a daemon that is starting goes through its socket once it serves', async () => {
    const v = await createVault();
    vaults.push(v);
    // This process plays the daemon: it holds the lock while the command starts and waits for it…
    const held = await acquireDatabaseLock(v.home, 1000, 'test');
    const listing = v.cli(['apps', 'list', '--json'], { env: { CREDVAULT_LOCK_TIMEOUT: '30' } });
    await new Promise((r) => setTimeout(r, 2000));
    // …then serves the database on its socket, as a daemon does once started. The lock changes hands
    // within one turn of this process's event loop (serveEmbedded takes it before its first await):
    // the command, polling every 200 ms at most, never finds it free.
    held.release();
    const served = serveEmbedded(v.home, 1000);
    try {
      await served;
      const listed = await listing;
      // Through the socket: before, it waited for the lock (held here throughout) and failed with
      // exit 8 after CREDVAULT_LOCK_TIMEOUT.
      expect(listed.code, listed.stderr).toBe(0);
      expect(JSON.parse(listed.stdout)).toEqual([]);
      expect(readFileSync(join(v.home, 'credvault.lock'), 'utf8')).toContain(`"pid":${process.pid}`);
    } finally {
      await (await served).close();
    }
  });

  it('names a program holding the lock through the library by its script, not as an empty credvault command', async () => {
    const v = await createVault();
    vaults.push(v);
    const script = join(v.root, 'nightly-report.mjs');
    writeFileSync(
      script,
      `const { openVault } = await import(${JSON.stringify(join(ROOT, 'dist', 'index.js'))});
const vault = await openVault({ home: ${JSON.stringify(v.home)}, env: {} });
process.stdout.write('open\\n');
process.stdin.resume();
process.stdin.on('end', () => vault.close());
`,
    );
    const holder = spawn(process.execPath, [script], {
      env: { PATH: process.env.PATH, HOME: v.root },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => holder.on('close', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on('data', (d: Buffer) => d.toString().includes('open') && resolve());
        holder.on('close', () => reject(new Error('the library program ended before opening the vault')));
      });
      const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
      expect(result.code).toBe(8);
      expect(result.stderr).toContain(
        `is in use by process ${holder.pid} (nightly-report.mjs, a program using credvault as a library) on `,
      );
      expect(result.stderr).not.toContain('(credvault )');
    } finally {
      holder.stdin!.end();
      await exited;
    }
  });

  it('takes over a lock left by a process that died', async () => {
    const v = await createVault();
    vaults.push(v);
    // pid 2^22+1 is above Linux's default pid_max, so no process has it.
    writeFileSync(
      join(v.home, 'credvault.lock'),
      JSON.stringify({
        pid: 4194305,
        host: (await import('node:os')).hostname(),
        command: 'token get',
        since: '',
      }),
    );
    const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    expect(result.code).toBe(0);
  });

  it('does not take over a lock naming another host, and says which file to delete if nothing runs there', async () => {
    const v = await createVault();
    vaults.push(v);
    // A daemon killed in a container that is gone: its hostname is not this machine's.
    const lock = join(v.home, 'credvault.lock');
    const since = '2026-01-02T03:04:05.000Z';
    writeFileSync(lock, JSON.stringify({ pid: 7, host: 'ctr-gone-1234', command: 'daemon', since }));
    const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    expect(result.code).toBe(8);
    expect(result.stderr).toContain('process 7 (credvault daemon) on ctr-gone-1234');
    expect(result.stderr).toContain(`since ${since}`);
    expect(result.stderr).toContain(`If no credvault runs on ctr-gone-1234 any more`);
    expect(result.stderr).toContain(`delete ${lock}`);
    expect(existsSync(lock)).toBe(true);
    const doctor = await v.cli(['doctor', '--json'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    expect(doctor.code).toBe(8);
    const database = (
      JSON.parse(doctor.stdout) as { checks: Array<{ name: string; message: string; fix: string }> }
    ).checks.find((check) => check.name === 'database');
    expect(database?.message).toContain('on ctr-gone-1234');
    expect(database?.fix).toContain(`delete ${lock}`);
  });

  it('takes over at once a lock whose pid a process that started after it now has (a reboot reused it)', async () => {
    const v = await createVault();
    vaults.push(v);
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const anHourAgo = new Date(Date.now() - 3600_000).toISOString();
      writeFileSync(
        join(v.home, 'credvault.lock'),
        JSON.stringify({ pid: sleeper.pid, host: hostname(), command: 'daemon', since: anHourAgo }),
      );
      const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
      expect(result.code, result.stderr).toBe(0);
    } finally {
      sleeper.kill();
    }
  });

  it('a stale lock with a takeover guard left over (a full disk) neither spins nor outlasts CREDVAULT_LOCK_TIMEOUT', async () => {
    const v = await createVault();
    vaults.push(v);
    // What a full disk leaves: an empty guard, and a lock naming a process that is gone.
    writeFileSync(
      join(v.home, 'credvault.lock'),
      JSON.stringify({
        pid: 4194305,
        host: hostname(),
        command: 'apps add',
        since: new Date().toISOString(),
      }),
    );
    writeFileSync(join(v.home, 'credvault.lock.takeover'), '');
    const started = Date.now();
    const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_LOCK_TIMEOUT: '1' } });
    // Before: it looped without sleeping or looking at its deadline until the guard was 10 s old.
    expect(Date.now() - started).toBeLessThan(8000);
    expect(result.code, result.stderr).toBe(0);
  });

  it('a data folder this user cannot write is exit 8 naming the folder and the fix, in doctor too', async (context) => {
    // No uids to show it with (Windows).
    if (process.getuid === undefined) return context.skip();
    const v = await createVault();
    vaults.push(v);
    const root = process.getuid() === 0;
    // root writes anywhere: the folder is then given to `nobody` and the command run as it, when
    // `nobody` can run credvault from this checkout at all.
    const asUser = root ? { uid: 65534, gid: 65534 } : {};
    if (root) {
      try {
        execFileSync(process.execPath, [BIN, '--version'], { ...asUser, stdio: 'ignore' });
      } catch {
        return context.skip();
      }
    }
    if (root) {
      chmodSync(v.root, 0o755);
      execFileSync('chown', ['-R', '65534:65534', v.home]);
    }
    chmodSync(v.home, 0o555);
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [BIN, ...args], {
          env: { ...v.env, CREDVAULT_LOCK_TIMEOUT: '1' } as NodeJS.ProcessEnv,
          cwd: v.home,
          ...asUser,
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d));
        child.stderr.on('data', (d: Buffer) => (stderr += d));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    try {
      const result = await run(['apps', 'list']);
      expect(result.code, result.stderr).toBe(8);
      expect(result.stderr).toContain(`the data folder ${v.home} is not writable`);
      expect(result.stderr).not.toContain('unexpected failure');
      const doctor = await run(['doctor']);
      expect(doctor.code).toBe(8);
      expect(doctor.stdout).toContain(`the data folder ${v.home} is not writable`);
      expect(doctor.stdout).not.toContain('[redacted]');
    } finally {
      chmodSync(v.home, 0o700);
    }
  });

  it('a data folder on a read-only file system is exit 8 naming it, and init under one says why', async (context) => {
    const v = await createVault();
    vaults.push(v);
    // A read-only bind mount of the vault's root: only root can make one, and not in every container.
    const readOnly = join(v.root, 'ro');
    mkdirSync(readOnly);
    try {
      execFileSync('mount', ['--bind', '-o', 'ro', v.root, readOnly], { stdio: 'ignore' });
    } catch {
      return context.skip();
    }
    try {
      const home = join(readOnly, 'home');
      const result = await v.cli(['apps', 'list'], { env: { CREDVAULT_HOME: home } });
      expect(result.code, result.stderr).toBe(8);
      expect(result.stderr).toContain(`the data folder ${home} is on a read-only file system`);
      expect(result.stderr).not.toContain('unexpected failure');
      const init = await v.cli(['init'], { env: { CREDVAULT_HOME: join(readOnly, 'new') } });
      // Before: exit 1, "unexpected failure: ENOENT … mkdir" (Node's recursive mkdir hid the EROFS).
      expect(init.stderr).toContain(`cannot make the data folder ${join(readOnly, 'new')} (EROFS)`);
      expect(init.code).toBe(2);
    } finally {
      execFileSync('umount', [readOnly]);
    }
  });
});
