import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireDatabaseLock, commandWords } from '../../src/db/lock.js';

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

describe('acquireDatabaseLock and locks left by others', () => {
  const folders: string[] = [];
  const sleepers: Array<{ kill(): void }> = [];
  afterEach(() => {
    for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
    for (const sleeper of sleepers.splice(0)) sleeper.kill();
  });
  const folder = () => {
    const made = mkdtempSync(join(tmpdir(), 'credvault-lock-'));
    folders.push(made);
    return made;
  };
  /** A live process that is not credvault, started now. */
  const liveStranger = () => {
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    sleepers.push(sleeper);
    return sleeper.pid!;
  };
  const onLinux = process.platform === 'linux';

  it.runIf(onLinux)('takes over a lock whose pid a process that started after the lock has', async () => {
    const home = folder();
    const since = new Date(Date.now() - 3600_000).toISOString();
    const left = { pid: liveStranger(), host: hostname(), command: 'daemon', since };
    writeFileSync(join(home, 'credvault.lock'), JSON.stringify(left));
    (await acquireDatabaseLock(home, 1000, 'test')).release();
  });

  it.runIf(onLinux)(
    'takes over a lock whose recorded start time is not its live pid’s, or whose boot is not this one',
    async () => {
      const home = folder();
      const since = new Date(Date.now() + 60_000).toISOString(); // the wall clock is not what tells
      const pid = liveStranger();
      writeFileSync(
        join(home, 'credvault.lock'),
        JSON.stringify({ pid, host: hostname(), command: 'daemon', since, started: 1 }),
      );
      (await acquireDatabaseLock(home, 1000, 'test')).release();
      writeFileSync(
        join(home, 'credvault.lock'),
        JSON.stringify({
          pid,
          host: hostname(),
          command: 'daemon',
          since,
          boot: '00000000-0000-0000-0000-000000000000',
        }),
      );
      (await acquireDatabaseLock(home, 1000, 'test')).release();
    },
  );

  it('keeps a lock whose live pid started before it was written', async () => {
    const home = folder();
    const pid = liveStranger();
    const left = {
      pid,
      host: hostname(),
      command: 'daemon',
      since: new Date(Date.now() + 1000).toISOString(),
    };
    writeFileSync(join(home, 'credvault.lock'), JSON.stringify(left));
    await expect(acquireDatabaseLock(home, 500, 'test')).rejects.toThrow(`is in use by process ${pid}`);
  });

  it('never takes over a lock naming another host or pid namespace, and names the file to delete', async () => {
    const home = folder();
    const lock = join(home, 'credvault.lock');
    const since = '2026-01-02T03:04:05.000Z';
    writeFileSync(lock, JSON.stringify({ pid: 4194305, host: 'elsewhere', command: 'daemon', since }));
    const failure = acquireDatabaseLock(home, 500, 'the data');
    await expect(failure).rejects.toThrow(
      `locked by process 4194305 (credvault daemon) on elsewhere since ${since}, which cannot be checked from this machine`,
    );
    await expect(failure).rejects.toMatchObject({
      hint: expect.stringContaining(
        `If no credvault runs on elsewhere any more (a container that is gone), delete ${lock}`,
      ),
    });
    writeFileSync(
      lock,
      JSON.stringify({ pid: 4194305, host: hostname(), command: 'daemon', since, pidns: 'pid:[1]' }),
    );
    await expect(acquireDatabaseLock(home, 500, 'the data')).rejects.toThrow('in another pid namespace');
  });

  it('takes over an empty lock a failed write left as soon as it is older than a moment', async () => {
    const home = folder();
    const lock = join(home, 'credvault.lock');
    writeFileSync(lock, '');
    const aMomentAgo = new Date(Date.now() - 2000);
    utimesSync(lock, aMomentAgo, aMomentAgo);
    (await acquireDatabaseLock(home, 500, 'test')).release();
  });

  it('a guard left by a dead process does not hold up taking over a stale lock', async () => {
    const home = folder();
    writeFileSync(
      join(home, 'credvault.lock'),
      JSON.stringify({ pid: 4194305, host: hostname(), command: 'daemon', since: '' }),
    );
    writeFileSync(join(home, 'credvault.lock.takeover'), `4194305@${hostname()}`);
    const started = Date.now();
    (await acquireDatabaseLock(home, 500, 'test')).release();
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it('waits for a live takeover guard no longer than its timeout', async () => {
    const home = folder();
    writeFileSync(
      join(home, 'credvault.lock'),
      JSON.stringify({ pid: 4194305, host: hostname(), command: 'daemon', since: '' }),
    );
    writeFileSync(join(home, 'credvault.lock.takeover'), `${process.pid}@${hostname()}`);
    const started = Date.now();
    await expect(acquireDatabaseLock(home, 500, 'test')).rejects.toThrow('gave up after');
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

describe('the command a lock names its holder by', () => {
  it('is the command’s words past the global options before them, and the daemon’s alone', () => {
    expect(commandWords(['apps', 'list', '--json'])).toBe('apps list');
    expect(commandWords(['--home', '/srv/cv', 'daemon', '--listen', 'unix:/run/cv.sock'])).toBe('daemon');
    expect(commandWords(['--database-url', 'postgres://x/y', '--actor', 'ops', 'token', 'get', 'acct'])).toBe(
      'token get',
    );
    expect(commandWords(['--home=/srv/cv', 'daemon', 'unit'])).toBe('daemon unit');
  });
});
