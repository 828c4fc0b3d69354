import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/paths.js';

const { privateCompileCacheDir } = createRequire(import.meta.url)('../../bin/compile-cache.cjs') as {
  privateCompileCacheDir(env: NodeJS.ProcessEnv, uid?: number, home?: () => string): string | null;
};
const uid = process.getuid!();
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

describe("Node's compile cache (22 and later)", () => {
  const folders: string[] = [];
  afterEach(() => {
    for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
  });
  const folder = () => {
    const made = mkdtempSync(join(tmpdir(), 'credvault-cache-'));
    folders.push(made);
    return made;
  };

  it('is kept in a folder of this user’s under $XDG_CACHE_HOME (else ~/.cache), made 0700', () => {
    const base = folder();
    const dir = privateCompileCacheDir({ XDG_CACHE_HOME: base }, uid);
    expect(dir).toBe(join(base, 'credvault', 'node-compile-cache'));
    expect(statSync(dir!).mode & 0o777).toBe(0o700);
    expect(statSync(join(base, 'credvault')).mode & 0o777).toBe(0o700);
    const home = folder();
    expect(privateCompileCacheDir({}, uid, () => home)).toBe(
      join(home, '.cache', 'credvault', 'node-compile-cache'),
    );
    // A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification).
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: 'relative' }, uid, () => home)).toBe(
      join(home, '.cache', 'credvault', 'node-compile-cache'),
    );
  });

  it('is not kept in a folder others may write, as the shared temporary folder is: no cache', () => {
    // Node's default, os.tmpdir()/node-compile-cache, where another user could have put compiled code.
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: '/tmp' }, uid)).toBeNull();
    const base = folder();
    mkdirSync(join(base, 'credvault', 'node-compile-cache'), { recursive: true });
    chmodSync(join(base, 'credvault', 'node-compile-cache'), 0o777);
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: base }, uid)).toBeNull();
    chmodSync(join(base, 'credvault', 'node-compile-cache'), 0o700);
    chmodSync(join(base, 'credvault'), 0o770);
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: base }, uid)).toBeNull();
    chmodSync(join(base, 'credvault'), 0o700);
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: base }, uid)).toBe(
      join(base, 'credvault', 'node-compile-cache'),
    );
  });

  it('is not kept where a link points, nor where a folder is another user’s', () => {
    const base = folder();
    const elsewhere = folder();
    mkdirSync(join(base, 'credvault'), { mode: 0o700 });
    symlinkSync(elsewhere, join(base, 'credvault', 'node-compile-cache'));
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: base }, uid)).toBeNull();
    // Another user's folder: the uid the folders have is not the one asked for.
    const other = folder();
    expect(privateCompileCacheDir({ XDG_CACHE_HOME: other }, uid + 1)).toBeNull();
    if (uid === 0) {
      // As root, a folder made by (chowned to) another user is refused for root.
      const theirs = folder();
      mkdirSync(join(theirs, 'credvault', 'node-compile-cache'), { recursive: true, mode: 0o700 });
      chownSync(join(theirs, 'credvault'), 65534, 65534);
      expect(privateCompileCacheDir({ XDG_CACHE_HOME: theirs }, uid)).toBeNull();
    }
  });

  it.runIf(NODE_MAJOR >= 22)('the built binary fills the private folder, and nothing under TMPDIR', () => {
    const cache = folder();
    const tmp = folder();
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CACHE_HOME: cache, TMPDIR: tmp };
    delete env.NODE_COMPILE_CACHE;
    const run = spawnSync(process.execPath, [BIN, 'completion', 'bash'], { env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(readdirSync(join(cache, 'credvault', 'node-compile-cache')).length).toBeGreaterThan(0);
    expect(readdirSync(tmp)).toEqual([]);
  });
});
