'use strict';
// Node 22 and later keep the code they compile between runs (module.enableCompileCache). By default in
// os.tmpdir()/node-compile-cache: on a shared machine another user can make that folder first and put
// compiled code in it under the names this user's runs look for (Node checks only checksums anyone can
// compute), and that code would run in a process that holds the vault's key. So the cache is only ever
// a private folder of this user's: $XDG_CACHE_HOME (else ~/.cache)/credvault/node-compile-cache, each
// folder on the way this user's, a folder and not a link, and writable by no one else. Anything else,
// and credvault runs without the cache. A NODE_COMPILE_CACHE the user set is their own choice: Node
// has taken it before this runs.
const { lstatSync, mkdirSync } = require('node:fs');
const { homedir } = require('node:os');
const { isAbsolute, join } = require('node:path');

/** Whether `path` is a folder of `uid`'s that no one else may change (not a link). */
function privateFolder(path, uid) {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  return Boolean(stat?.isDirectory() && stat.uid === uid && (stat.mode & 0o022) === 0);
}

/**
 * The folder for Node's compile cache, made 0700 if it is not there; null when there is none that is
 * private (see above), or on Windows (no uid to check).
 */
function privateCompileCacheDir(env = process.env, uid = process.getuid?.(), home = homedir) {
  if (uid === undefined) return null;
  let base = env.XDG_CACHE_HOME;
  if (!base || !isAbsolute(base)) {
    let userHome;
    try {
      userHome = home();
    } catch {
      return null;
    }
    if (!userHome || !isAbsolute(userHome)) return null;
    base = join(userHome, '.cache');
  }
  const folders = [base, join(base, 'credvault'), join(base, 'credvault', 'node-compile-cache')];
  try {
    mkdirSync(folders[2], { recursive: true, mode: 0o700 });
  } catch {
    return null;
  }
  return folders.every((folder) => privateFolder(folder, uid)) ? folders[2] : null;
}

/** Turns Node's compile cache on in the private folder, where Node has one (22+) and it can be had. */
function enablePrivateCompileCache() {
  const { enableCompileCache } = require('node:module');
  if (!enableCompileCache || process.env.NODE_COMPILE_CACHE || process.env.NODE_DISABLE_COMPILE_CACHE) return;
  const dir = privateCompileCacheDir();
  if (dir) enableCompileCache(dir);
}

module.exports = { privateCompileCacheDir, enablePrivateCompileCache };
