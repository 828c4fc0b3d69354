import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { DatabaseError } from '../errors.js';
import { isCredvaultProcess } from '../util/own-process.js';

/**
 * An exclusive lock on the embedded database folder, so that two processes never open the same
 * PGlite data directory (PGlite is single-process; two writers would corrupt it).
 *
 * The lock is a file created with O_EXCL holding the owner's pid and host. A lock whose owner is gone
 * from this host is taken over at once: its pid is dead, or taken by a process that started after the
 * lock was written (a pid reused after a crash and a reboot); staleness never depends on timers, so a
 * process whose event loop is busy inside PGlite never loses its lock. A lock naming another host
 * (a home shared over NFS, or a container that is gone) cannot be checked from here: it is never
 * taken over, and the error says which file to delete once nothing runs there. Taking over goes
 * through a second O_EXCL guard so that two processes cannot both take over the same stale lock.
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
  /**
   * Where the pid means something, on Linux (absent elsewhere, and from locks written before they
   * were added): the kernel's boot id, the pid namespace, and the holder's start time in clock ticks
   * since boot (field 22 of /proc/PID/stat). A pid whose process started at another tick, or a boot
   * id that changed, is another process than the holder; none of these depend on the wall clock.
   */
  boot?: string;
  pidns?: string;
  started?: number;
}

function readOr(read: () => string): string | undefined {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

const BOOT_ID = readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'));
const PID_NS = readOr(() => readlinkSync('/proc/self/ns/pid'));
/** The machine's boot time in ms since the epoch (`btime` of /proc/stat), where /proc tells. */
const BOOTED_AT = (() => {
  const btime = /^btime (\d+)$/m.exec(readOr(() => readFileSync('/proc/stat', 'utf8')) ?? '')?.[1];
  return btime ? Number(btime) * 1000 : undefined;
})();
/** Linux reports process times to user space in USER_HZ ticks, 100 a second on every common architecture. */
const TICKS_PER_SECOND = 100;

/** When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); undefined where /proc does not tell. */
function startTicks(pid: number): number | undefined {
  const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, 'utf8'));
  if (!stat) return undefined;
  // The command name (field 2) is in parentheses and may hold spaces and parentheses itself: the
  // fields after its last `)` are 3, 4, …
  const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/**
 * The lock's pid is not the holder's process any more, though alive: a process with it started after
 * the holder did. Exact when the lock records the holder's start (`started`); for a lock without it
 * (an older credvault's), a process that started after the lock's `since` (with a few seconds for the
 * boot time's rounding) cannot have written it.
 */
function pidReused(owner: Owner): boolean {
  const ticks = startTicks(owner.pid);
  if (ticks === undefined) return false;
  if (typeof owner.started === 'number') return ticks !== owner.started;
  const since = Date.parse(owner.since);
  if (!BOOTED_AT || Number.isNaN(since)) return false;
  return BOOTED_AT + (ticks * 1000) / TICKS_PER_SECOND > since + 5000;
}

/**
 * Whether this process can tell if the lock's holder still runs: it names this host and, when it
 * says, the same pid namespace (a container that shares the host's name sees other pids).
 */
function checkable(owner: Owner): boolean {
  return owner.host === hostname() && (!owner.pidns || !PID_NS || owner.pidns === PID_NS);
}

/** This process is `credvault …`, not a program using the library (see isCredvaultProcess). */
const cli = isCredvaultProcess;

/** This process as a person waiting for its lock reads it: `credvault apps list`, or the program's name. */
/** Global options that take a value (the value is not a command word). */
const VALUED_GLOBALS = new Set(['--home', '--database-url', '--actor']);

/**
 * The command's first two words (`apps list`, `daemon`), past the global options before them
 * (`credvault --home /srv/x daemon`): what the lock names its holder by.
 */
export function commandWords(args: string[]): string {
  const words: string[] = [];
  for (let i = 0; i < args.length && words.length < 2; i++) {
    const arg = args[i]!;
    if (VALUED_GLOBALS.has(arg)) i++;
    else if (arg.startsWith('-')) {
      // `daemon`'s options take values too (--listen ADDRESS): its one subcommand is `unit`.
      if (words[0] === 'daemon') break;
    } else words.push(arg);
  }
  return words.join(' ');
}

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

/**
 * The pid of a live `credvault daemon` holding the lock in `folder` (on this host, checked as the lock
 * is), or null: a daemon starting beside it is refused at once rather than after the lock's wait.
 */
export function daemonHolding(folder: string): number | null {
  const owner = readOwner(`${folder}/credvault.lock`);
  if (!owner || !/(^| )daemon( |$)/.test(owner.command) || !checkable(owner)) return null;
  if (owner.boot && BOOT_ID && owner.boot !== BOOT_ID) return null;
  return alive(owner.pid) && !pidReused(owner) && owner.pid !== process.pid ? owner.pid : null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The lock's own file failing (not another holder): the data folder read-only, not this user's, or
 * its disk full. A database error (exit 8) naming the folder and the way out.
 */
function fileFailure(error: unknown, folder: string, description: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  const writing = `credvault writes its lock file there before it opens the embedded database at ${description}, even to read`;
  if (code === 'EROFS') {
    return new DatabaseError(`the data folder ${folder} is on a read-only file system: ${writing}`, {
      hint: `Mount it read-write, or point CREDVAULT_HOME at a writable copy of ${folder}.`,
      cause: error,
    });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    const mine = process.getuid?.();
    let found: { uid: number; mode: number } | null = null;
    try {
      found = statSync(folder);
    } catch {}
    if (found && found.uid === mine) {
      // The user's own folder, its mode taking the write away (chmod a-w, a restored backup).
      return new DatabaseError(
        `the data folder ${folder} is not writable (mode ${(found.mode & 0o777).toString(8).padStart(4, '0')}): ${writing}`,
        { hint: `Make it writable: chmod u+w ${folder}`, cause: error },
      );
    }
    const whose = found ? ` (it belongs to uid ${found.uid}, this is uid ${mine})` : '';
    return new DatabaseError(`the data folder ${folder} is not writable by this user${whose}: ${writing}`, {
      hint: `Run credvault as the folder's owner (sudo -u OWNER credvault …), or make ${folder} writable by this user.`,
      cause: error,
    });
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new DatabaseError(
      `no space left on the disk that holds the data folder ${folder}${code === 'EDQUOT' ? ' (disk quota exceeded)' : ''}: ${writing}`,
      { hint: `Free space on that disk (df -h ${folder}), then try again.`, cause: error },
    );
  }
  return error;
}

/**
 * Creates `path` holding `content` unless it exists (false then). A write that fails after the file
 * was made (a full disk) removes it again: an empty lock left behind would hold others up.
 */
function tryCreate(path: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    writeSync(fd, content);
  } catch (error) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw error;
  }
  closeSync(fd);
  return true;
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

/** An empty or unreadable file older than this is a leftover (a write that failed), not one being written. */
const WRITING_MS = 1000;

/**
 * True when the lock at `path` belongs to a process that is gone from this host (dead, its pid reused,
 * or the machine rebooted since), or is an unreadable leftover. A lock from another host is never
 * stale: nothing here can tell whether its holder still runs.
 */
function isStale(path: string): boolean {
  const owner = readOwner(path);
  if (!owner) return ageMs(path) > WRITING_MS; // being written right now, or an empty leftover
  if (!checkable(owner)) return false;
  if (owner.boot && BOOT_ID && owner.boot !== BOOT_ID) return true; // no process outlives a reboot
  return !alive(owner.pid) || pidReused(owner);
}

/**
 * A takeover guard left over: its process died (or the disk filled while it was written), or it is
 * older than a takeover can last (one check and one unlink: far under a second).
 */
function guardStale(guard: string): boolean {
  const age = ageMs(guard);
  if (age > 5000) return true;
  const [pid, host] = readOr(() => readFileSync(guard, 'utf8'))?.split('@') ?? [];
  if (!pid || !host) return age > WRITING_MS;
  return host === hostname() && !alive(Number(pid));
}

/**
 * `stale`: whether the lock at `path` may be taken over (checked again under the takeover guard).
 * True when the lock was removed; false when another process holds the guard (or it is left over and
 * was cleared: the next attempt takes it).
 */
function takeOver(path: string, stale: (path: string) => boolean = isStale): boolean {
  const guard = `${path}.takeover`;
  if (guardStale(guard)) rmSync(guard, { force: true });
  if (!tryCreate(guard, `${process.pid}@${hostname()}`)) return false;
  try {
    if (!stale(path)) return false;
    unlinkSync(path);
    return true;
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
  try {
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    return await waitForLock(folder, timeoutMs, description, givesWay);
  } catch (error) {
    throw fileFailure(error, folder, description);
  }
}

async function waitForLock(
  folder: string,
  timeoutMs: number,
  description: string,
  givesWay: (() => Promise<boolean>) | null,
): Promise<DatabaseLock | null> {
  const path = `${folder}/credvault.lock`;
  const command = cli ? commandWords(process.argv.slice(2)) : '';
  const me: Owner = {
    pid: process.pid,
    host: hostname(),
    command,
    holder: holderName(command),
    since: new Date().toISOString(),
    ...(BOOT_ID ? { boot: BOOT_ID } : {}),
    ...(PID_NS ? { pidns: PID_NS } : {}),
    ...(startTicks(process.pid) !== undefined ? { started: startTicks(process.pid) } : {}),
  };
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (tryCreate(path, JSON.stringify(me))) break;
    const stale = isStale(path) ? isStale : ownPidLeftover(path) ? ownPidLeftover : null;
    // Taken over: try again at once. Not (another process is taking it over, or a guard was left
    // over): wait like for a holder, so that the deadline holds and the CPU rests.
    if (stale && takeOver(path, stale)) continue;
    const holder = stale ? null : readOwner(path);
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
      const name = owner ? (owner.holder ?? `credvault ${owner.command}`.trim()) : '';
      if (owner && !checkable(owner)) {
        // Left by a container that is gone, or held by a process on another machine sharing the
        // folder: only a person can tell which, and the way out is theirs to take.
        const where =
          owner.host === me.host
            ? `on ${owner.host} in another pid namespace (a container)`
            : `on ${owner.host}`;
        throw new DatabaseError(
          `the embedded database at ${description} is locked by process ${owner.pid} (${name}) ${where} since ${owner.since || 'an unknown time'}, which cannot be checked from this machine (${me.host}); gave up after ${Math.round(timeoutMs / 1000)}s`,
          {
            hint: `If no credvault runs ${owner.host === me.host ? 'in that container' : `on ${owner.host}`} any more (a container that is gone), delete ${path} and try again; if one does, wait for it to finish.`,
          },
        );
      }
      const who = owner ? `process ${owner.pid} (${name}) on ${owner.host}` : 'another process';
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
