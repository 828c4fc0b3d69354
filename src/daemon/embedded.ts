import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import {
  DAEMON_SETTINGS,
  embeddedDataDir,
  embeddedSocketPath,
  guardDataDir,
  requireOwnVault,
} from '../db/client.js';
import { acquireDatabaseLock, daemonHolding } from '../db/lock.js';
import { InvalidInputError } from '../errors.js';
import { socketPathFits, UNIX_SOCKET_PATH_MAX } from '../util/net.js';
import { secondDaemonError } from './options.js';

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

/** A startup or SSL/cancel request has no type byte: its first four bytes are its length. */
function isUntyped(message: Uint8Array): boolean {
  return (
    message.length >= 8 && new DataView(message.buffer, message.byteOffset).getInt32(0) === message.length
  );
}

function endsSequence(message: Uint8Array): boolean {
  return isUntyped(message) || SEQUENCE_ENDS.has(message[0]!);
}

/**
 * Finds NotificationResponse messages ('A': pid, channel, payload) in the wire protocol answers of
 * one message, as they stream by in chunks that need not end where messages do.
 */
class NotificationScanner {
  readonly #header = Buffer.alloc(5);
  #headerLength = 0;
  #remaining = 0;
  #body: Buffer[] | null = null;
  readonly #onNotification: (channel: string, payload: string) => void;

  constructor(onNotification: (channel: string, payload: string) => void) {
    this.#onNotification = onNotification;
  }

  push(chunk: Uint8Array): void {
    const data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let at = 0;
    while (at < data.length) {
      if (this.#headerLength < 5) {
        const take = Math.min(5 - this.#headerLength, data.length - at);
        data.copy(this.#header, this.#headerLength, at, at + take);
        this.#headerLength += take;
        at += take;
        if (this.#headerLength < 5) return;
        this.#remaining = this.#header.readInt32BE(1) - 4;
        this.#body = this.#header[0] === NOTIFICATION ? [] : null;
      }
      const take = Math.min(this.#remaining, data.length - at);
      this.#body?.push(Buffer.from(data.subarray(at, at + take)));
      at += take;
      this.#remaining -= take;
      if (this.#remaining === 0) {
        if (this.#body) {
          const body = Buffer.concat(this.#body);
          const channelEnd = body.indexOf(0, 4);
          this.#onNotification(
            body.toString('utf8', 4, channelEnd),
            body.toString('utf8', channelEnd + 1, body.length - 1),
          );
        }
        this.#headerLength = 0;
        this.#body = null;
      }
    }
  }
}

const NOTIFICATION = 'A'.charCodeAt(0);

export class SessionQueue {
  readonly #db: PGlite;
  readonly #onNotification: ((channel: string, payload: string) => void) | undefined;
  #queue: Pending[] = [];
  #owner: number | null = null;
  #running = false;

  /**
   * `onNotification` sees the notifications in the answers (a NOTIFY committed through the socket
   * reaches the session's own LISTEN): PGlite's listen() does not look at raw protocol answers.
   */
  constructor(db: PGlite, onNotification?: (channel: string, payload: string) => void) {
    this.#db = db;
    this.#onNotification = onNotification;
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
        // A startup, SSL or cancel request has no type byte; its answer may not be typed either.
        const scanner =
          this.#onNotification && !isUntyped(next.message)
            ? new NotificationScanner(this.#onNotification)
            : null;
        try {
          await this.#db.runExclusive(() =>
            this.#db.execProtocolRawStream(next.message, {
              onRawData: (data) => {
                size += data.length;
                scanner?.push(data);
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
  /**
   * Takes no new session at once; the sessions of commands under way (a refresh waiting for its
   * platform's answer, whose rotated refresh token must be stored) go on until they end or until
   * `drainUntil` (a time in ms since the epoch; none: cut at once), then the database closes.
   */
  close(drainUntil?: number): Promise<void>;
}

/**
 * Serves the embedded database on its socket. `notifications` listen on the session before anyone can
 * connect: a NOTIFY that another command commits through the socket comes back in that command's own
 * answer, where the queue sees it, before the command's statement returns.
 */
export async function serveEmbedded(
  home: string,
  lockTimeoutMs: number,
  notifications?: { channel: string; onPayload: (payload: string) => void },
  /** Told when the socket was found gone and is served again. */
  onRelisten?: (socketPath: string) => void,
): Promise<EmbeddedServer> {
  requireOwnVault(home);
  const socketPath = embeddedSocketPath(home);
  if (!socketPathFits(socketPath)) {
    // Node would listen on the path cut short, where no command looks for it.
    throw new InvalidInputError(
      `the daemon cannot serve the embedded database at ${home}: its socket path ${socketPath} is ${Buffer.byteLength(socketPath)} bytes long, over the ${UNIX_SOCKET_PATH_MAX} a unix socket's path may have here`,
      {
        hint: `Use a CREDVAULT_HOME of at most ${UNIX_SOCKET_PATH_MAX - (Buffer.byteLength(socketPath) - Buffer.byteLength(home))} bytes (move the folder, or link a short path to it: ln -s ${home} /tmp/credvault), or PostgreSQL (DATABASE_URL).`,
      },
    );
  }
  // Another daemon that holds it (two started at once: both found no run file) is not waited for.
  const lock = (await acquireDatabaseLock(home, lockTimeoutMs, embeddedDataDir(home), async () => {
    const other = daemonHolding(home);
    if (other === null) return false;
    throw secondDaemonError(home, `pid ${other}`);
  }))!;
  try {
    const [{ PGlite }, { PGLiteSocketHandler }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('@electric-sql/pglite-socket'),
    ]);
    guardDataDir(embeddedDataDir(home));
    const db = new PGlite(embeddedDataDir(home), {
      startParams: [...PGlite.defaultStartParams, ...DAEMON_SETTINGS],
    });
    await db.waitReady;
    const queue = new SessionQueue(
      db,
      notifications &&
        ((channel, payload) => {
          if (channel === notifications.channel) notifications.onPayload(payload);
        }),
    );
    if (notifications) await db.exec(`LISTEN ${notifications.channel}`);
    const sockets = new Set<Socket>();
    const serve = (socket: Socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      // The handler's queue type is not exported; SessionQueue has the same four methods.
      const handler = new PGLiteSocketHandler({ queryQueue: queue as never, closeOnDetach: true });
      handler.attach(socket).catch(() => socket.destroy());
    };
    /** Every server made: the first, and one more each time the socket was found removed. */
    const servers: Server[] = [];
    const listenAt = async () => {
      mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
      chmodSync(dirname(socketPath), 0o700);
      // We hold the lock, so a socket file here is a leftover of a daemon that died.
      rmSync(socketPath, { force: true });
      const server = createServer(serve);
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
      if (closing) {
        // close() ran while this one was being made: it serves nothing more.
        server.close();
        rmSync(socketPath, { force: true });
        return;
      }
      servers.push(server);
    };
    let closing = false;
    await listenAt();
    // The socket removed under the daemon (`rm -r run/`, a cleaner of old files): every command would
    // take the daemon's lock for a holder that never answers. Served again at the same path; the
    // connections made before keep their server.
    let relistening = false;
    const watch = setInterval(() => {
      if (relistening || existsSync(socketPath)) return;
      relistening = true;
      listenAt()
        .then(() => onRelisten?.(socketPath))
        .catch(() => {})
        .finally(() => {
          relistening = false;
        });
    }, 2_000);
    watch.unref();
    return {
      socketPath,
      async close(drainUntil = 0) {
        closing = true;
        clearInterval(watch);
        try {
          // A command that starts now finds no daemon: it waits for the lock and opens the files itself.
          const closed = Promise.all(
            servers.map((server) => new Promise((resolve) => server.close(resolve))),
          );
          rmSync(socketPath, { force: true });
          const wait = drainUntil - Date.now();
          if (sockets.size > 0 && wait > 0) {
            let timer: NodeJS.Timeout | undefined;
            await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, wait)))]);
            clearTimeout(timer);
          }
          for (const socket of sockets) socket.destroy();
          await closed;
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
