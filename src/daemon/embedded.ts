import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { embeddedDataDir, embeddedSocketPath } from '../db/client.js';
import { acquireDatabaseLock } from '../db/lock.js';

/**
 * The embedded database, held by the daemon and served on a 0600 unix socket in a 0700 folder, so
 * that every other credvault command (and the daemon itself) reaches it as PostgreSQL instead of
 * failing with "locked". pglite-socket multiplexes the connections and keeps each transaction's
 * statements together.
 */
export interface EmbeddedServer {
  socketPath: string;
  close(): Promise<void>;
}

export async function serveEmbedded(home: string, lockTimeoutMs: number): Promise<EmbeddedServer> {
  const lock = await acquireDatabaseLock(home, lockTimeoutMs, embeddedDataDir(home));
  const socketPath = embeddedSocketPath(home);
  try {
    const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('@electric-sql/pglite-socket'),
    ]);
    const db = new PGlite(embeddedDataDir(home));
    await db.waitReady;
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    chmodSync(dirname(socketPath), 0o700);
    // We hold the lock, so a socket file here is a leftover of a daemon that died.
    rmSync(socketPath, { force: true });
    const server = new PGLiteSocketServer({ db, path: socketPath, maxConnections: 64 });
    const previous = process.umask(0o177);
    try {
      await server.start();
    } finally {
      process.umask(previous);
    }
    chmodSync(socketPath, 0o600);
    return {
      socketPath,
      async close() {
        try {
          await server.stop();
          await db.close();
        } finally {
          rmSync(socketPath, { force: true });
          lock.release();
        }
      },
    };
  } catch (error) {
    lock.release();
    throw error;
  }
}
