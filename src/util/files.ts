import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';

/**
 * Creates `path` with `content`, never over an existing file (EEXIST, as `flag: 'wx'` fails), and
 * never visible half-written: the content goes to a private file beside it first, is flushed, and is
 * then linked in under its name in one step. A second `init` started at the same moment reads either
 * no key file or the whole of it; with `wx` alone it could read an empty one and report a wrong key.
 */
export function createFileAtomically(path: string, content: string, mode = 0o600): void {
  const temporary = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  writeNewFileFlushed(temporary, content, mode);
  try {
    linkSync(temporary, path);
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    // A file system without hard links: the plain exclusive create, as before.
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw error;
    writeFileSync(path, content, { mode, flag: 'wx' });
  } finally {
    rmSync(temporary, { force: true });
  }
}

/** Creates `path` (never over an existing file) with `content`, flushed to the disk before it returns. */
export function writeNewFileFlushed(path: string, content: string, mode = 0o600): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
