import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serveEmbedded } from '../../src/daemon/embedded.js';
import { acquireDatabaseLock } from '../../src/db/lock.js';
import { ROOT } from '../helpers/paths.js';
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
});
