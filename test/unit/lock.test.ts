import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireDatabaseLock } from '../../src/db/lock.js';

/** The embedded database's lock file, when it names this very process. */
describe('acquireDatabaseLock and this process’s own pid', () => {
  const folders: string[] = [];
  afterEach(() => {
    for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
  });
  const folder = () => {
    const made = mkdtempSync(join(tmpdir(), 'credvault-lock-'));
    folders.push(made);
    return made;
  };

  it('takes over a lock an earlier process with the same pid left (a container restarted as PID 1)', async () => {
    const home = folder();
    const left = { pid: process.pid, host: hostname(), command: 'daemon', since: '2026-01-01T00:00:00Z' };
    writeFileSync(join(home, 'credvault.lock'), JSON.stringify(left));
    const lock = await acquireDatabaseLock(home, 1000, 'test');
    expect(JSON.parse(readFileSync(join(home, 'credvault.lock'), 'utf8')).since).not.toBe(left.since);
    lock.release();
  });

  it('refuses at once a second lock this process holds already, naming it, and takes it once released', async () => {
    const home = folder();
    const lock = await acquireDatabaseLock(home, 1000, 'the data');
    const started = Date.now();
    await expect(acquireDatabaseLock(home, 5000, 'the data')).rejects.toThrow(
      'this process already has the embedded database at the data open',
    );
    expect(Date.now() - started).toBeLessThan(1000);
    lock.release();
    (await acquireDatabaseLock(home, 1000, 'the data')).release();
  });
});
