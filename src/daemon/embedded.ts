import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { embeddedDataDir, embeddedSocketPath } from '../db/client.js';
import { acquireDatabaseLock } from '../db/lock.js';

/**
 * The embedded database, held by the daemon and served on a 0600 unix socket in a 0700 folder, so
 * that every other credvault command (and the daemon itself) reaches it as PostgreSQL instead of
 * failing with "locked".
 *
 * PGlite has one session. pglite-socket's handler speaks the wire protocol for each connection; the
 * queue below decides whose protocol messages reach the session. pglite-socket's own queue keeps a
 * transaction's statements together, but lets another connection's messages in between the Parse,
 * Bind and Execute of one extended-protocol query (they all share the session's unnamed statement),
 * so one query could run with another's parameters. Here a connection that has begun a message
 * sequence keeps the session until its Sync (and until its transaction ends).
 */

interface Pending {
  handlerId: number;
  message: Uint8Array;
  onData: (data: Uint8Array) => void;
  resolve: (size: number) => void;
  reject: (error: Error) => void;
}

/** Message types that end a sequence: Sync, simple Query, Terminate. */
const SEQUENCE_ENDS = new Set(['S'.charCodeAt(0), 'Q'.charCodeAt(0), 'X'.charCodeAt(0)]);

function endsSequence(message: Uint8Array): boolean {
  // A startup or SSL/cancel request has no type byte: its first four bytes are its length.
  const startup =
    message.length >= 8 && new DataView(message.buffer, message.byteOffset).getInt32(0) === message.length;
  return startup || SEQUENCE_ENDS.has(message[0]!);
}

export class SessionQueue {
  readonly #db: PGlite;
  #queue: Pending[] = [];
  #owner: number | null = null;
  #running = false;

  constructor(db: PGlite) {
    this.#db = db;
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ handlerId, message, onData, resolve, reject });
      void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (;;) {
        const index = this.#owner === null ? 0 : this.#queue.findIndex((p) => p.handlerId === this.#owner);
        if (index === -1 || this.#queue.length === 0) break;
        const [next] = this.#queue.splice(index, 1) as [Pending];
        let size = 0;
        try {
          await this.#db.runExclusive(() =>
            this.#db.execProtocolRawStream(next.message, {
              onRawData: (data) => {
                size += data.length;
                next.onData(data);
              },
            }),
          );
        } catch (error) {
          this.#owner = null;
          next.reject(error as Error);
          continue;
        }
        this.#owner = endsSequence(next.message) && !this.#db.isInTransaction() ? null : next.handlerId;
        next.resolve(size);
      }
    } finally {
      this.#running = false;
    }
  }

  clearQueueForHandler(handlerId: number): void {
    this.#queue = this.#queue.filter((p) => {
      if (p.handlerId !== handlerId) return true;
      p.reject(new Error('connection closed'));
      return false;
    });
  }

  /** A connection that went away in the middle of a sequence or a transaction gives the session back. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    if (this.#owner !== handlerId) return;
    if (this.#db.isInTransaction()) await this.#db.exec('ROLLBACK');
    this.#owner = null;
    await this.#drain();
  }

  getQueueLength(): number {
    return this.#queue.length;
  }
}

export interface EmbeddedServer {
  socketPath: string;
  close(): Promise<void>;
}

export async function serveEmbedded(home: string, lockTimeoutMs: number): Promise<EmbeddedServer> {
  const lock = await acquireDatabaseLock(home, lockTimeoutMs, embeddedDataDir(home));
  const socketPath = embeddedSocketPath(home);
  try {
    const [{ PGlite }, { PGLiteSocketHandler }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('@electric-sql/pglite-socket'),
    ]);
    const db = new PGlite(embeddedDataDir(home));
    await db.waitReady;
    const queue = new SessionQueue(db);
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      // The handler's queue type is not exported; SessionQueue has the same four methods.
      const handler = new PGLiteSocketHandler({ queryQueue: queue as never, closeOnDetach: true });
      handler.attach(socket).catch(() => socket.destroy());
    });
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    chmodSync(dirname(socketPath), 0o700);
    // We hold the lock, so a socket file here is a leftover of a daemon that died.
    rmSync(socketPath, { force: true });
    const previous = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => resolve());
      });
    } finally {
      process.umask(previous);
    }
    chmodSync(socketPath, 0o600);
    return {
      socketPath,
      async close() {
        try {
          for (const socket of sockets) socket.destroy();
          await new Promise((resolve) => server.close(resolve));
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
