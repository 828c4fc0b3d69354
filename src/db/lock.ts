import { mkdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { DatabaseError } from '../errors.js';
import { isCredvaultProcess } from '../util/own-process.js';

/**
 * An exclusive lock on the embedded database folder, so that two processes never open the same
 * PGlite data directory (PGlite is single-process; two writers would corrupt it).
 *
 * The lock is a file created with O_EXCL holding the owner's pid and host. A lock whose owner is a
 * dead process on this host is taken over at once; staleness never depends on timers, so a process
 * whose event loop is busy inside PGlite never loses its lock. Taking over goes through a second
 * O_EXCL guard so that two processes cannot both take over the same stale lock.
 *
 * Written by hand: proper-lockfile decides staleness by mtime refreshed on a timer, which a long
 * synchronous PGlite call can starve.
 */

interface Owner {
  pid: number;
  host: string;
  /** The CLI's command words (`apps list`); empty for a program using credvault as a library. */
  command: string;
  /** Who holds it, as a person reads it (absent from locks written before it was added: the CLI's). */
  holder?: string;
  since: string;
}

/** This process is `credvault …`, not a program using the library (see isCredvaultProcess). */
const cli = isCredvaultProcess;

/** This process as a person waiting for its lock reads it: `credvault apps list`, or the program's name. */
function holderName(command: string): string {
  if (cli) return `credvault ${command}`.trim();
  const script = process.argv[1] ? basename(process.argv[1]) : '';
  return script
    ? `${script}, a program using credvault as a library`
    : 'a program using credvault as a library';
}

export interface DatabaseLock {
  release(): void;
}

function readOwner(path: string): Owner | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Owner;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryCreate(path: string, content: string): boolean {
  try {
    writeFileSync(path, content, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

/** True when the lock at `path` belongs to a process that is gone, or is an unreadable leftover. */
function isStale(path: string): boolean {
  const owner = readOwner(path);
  if (!owner) return ageMs(path) > 5000; // being written right now, or a truncated leftover
  return owner.host === hostname() && !alive(owner.pid);
}

/** `stale`: whether the lock at `path` may be taken over (checked again under the takeover guard). */
function takeOver(path: string, stale: (path: string) => boolean = isStale): void {
  const guard = `${path}.takeover`;
  if (ageMs(guard) > 10_000) rmSync(guard, { force: true });
  if (!tryCreate(guard, String(process.pid))) return;
  try {
    if (stale(path)) unlinkSync(path);
  } finally {
    rmSync(guard, { force: true });
  }
}

/**
 * The lock files this process holds, shared by every copy of credvault loaded in it (a global
 * symbol): a lock file naming this process's pid that is not among them was written by an earlier
 * process that had the same pid (a container restarted after a crash: PID 1 again), and is stale.
 */
function heldHere(): Set<string> {
  const key = Symbol.for('credvault.heldDatabaseLocks');
  const global = globalThis as { [key: symbol]: Set<string> | undefined };
  global[key] ??= new Set();
  return global[key];
}

/** The lock names this process (pid and host) but not one it holds: an earlier life's. */
function ownPidLeftover(path: string): boolean {
  const owner = readOwner(path);
  return owner !== null && owner.pid === process.pid && owner.host === hostname() && !heldHere().has(path);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The lock, waiting for it up to `timeoutMs`. `givesWay`, asked between attempts, may end the wait
 * (the database can be reached another way: a daemon that started meanwhile serves it on its
 * socket); the answer is then null.
 */
export async function acquireDatabaseLock(
  folder: string,
  timeoutMs: number,
  description: string,
): Promise<DatabaseLock>;
export async function acquireDatabaseLock(
  folder: string,
  timeoutMs: number,
  description: string,
  givesWay: (() => Promise<boolean>) | null,
): Promise<DatabaseLock | null>;
export async function acquireDatabaseLock(
  folder: string,
  timeoutMs: number,
  description: string,
  givesWay: (() => Promise<boolean>) | null = null,
): Promise<DatabaseLock | null> {
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  const path = `${folder}/credvault.lock`;
  const command = cli ? process.argv.slice(2, 4).join(' ') : '';
  const me: Owner = {
    pid: process.pid,
    host: hostname(),
    command,
    holder: holderName(command),
    since: new Date().toISOString(),
  };
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (tryCreate(path, JSON.stringify(me))) break;
    if (isStale(path)) {
      takeOver(path);
      continue;
    }
    if (ownPidLeftover(path)) {
      takeOver(path, ownPidLeftover);
      continue;
    }
    const holder = readOwner(path);
    if (holder && holder.pid === process.pid && holder.host === me.host) {
      // Waiting for ourselves would only time out. The handles of one credvault share the folder's
      // database (db/client.ts); this is another copy of credvault loaded in this process, or the
      // folder reached under a path that does not resolve to the same one.
      throw new DatabaseError(
        `this process already has the embedded database at ${description} open (a vault opened by another copy of credvault loaded in this process, or the daemon's)`,
        {
          hint: 'Use the vault already open, or close() it first; one copy of credvault per process shares one open vault among its openVault() calls.',
        },
      );
    }
    if (givesWay && (await givesWay())) return null;
    if (Date.now() >= deadline) {
      const owner = readOwner(path);
      const who = owner
        ? `process ${owner.pid} (${owner.holder ?? `credvault ${owner.command}`.trim()}) on ${owner.host}`
        : 'another process';
      throw new DatabaseError(
        `the embedded database at ${description} is in use by ${who}; gave up after ${Math.round(timeoutMs / 1000)}s`,
        {
          hint: 'Wait for it to finish and try again, or raise CREDVAULT_LOCK_TIMEOUT (seconds). Teams that run credvault from several processes at once should use PostgreSQL (DATABASE_URL).',
        },
      );
    }
    await sleep(Math.min(25 * 2 ** Math.min(attempt, 3), 200));
  }
  let held = true;
  heldHere().add(path);
  const release = () => {
    if (!held) return;
    held = false;
    heldHere().delete(path);
    const owner = readOwner(path);
    if (owner && owner.pid === process.pid && owner.host === me.host) rmSync(path, { force: true });
  };
  process.once('exit', release);
  return {
    release() {
      process.removeListener('exit', release);
      release();
    },
  };
}
