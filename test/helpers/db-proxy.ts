/**
 * A TCP proxy in front of the test's PostgreSQL server, to play the network between a daemon and its
 * database going wrong without touching the server (shared by every test): `blackhole()` keeps every
 * connection open and passes nothing more either way, and takes new connections without passing them
 * on (a partition, or a server that accepted and then hung); `down()` closes every connection and
 * each new one at once (a server stopped); `restore()` passes new connections on again. Connections
 * blackholed stay so: what was sent on them is lost. `blackholeListeners()` does to the connections
 * that sent a LISTEN what `blackhole()` does to all, and to each that sends one from then on until
 * `restore()`, as it sends it: the rest go on (a partition, or a stopped server come back, that only
 * a daemon's LISTEN connection does not get over).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface DbProxy {
  /** DATABASE_URL through the proxy. */
  url: string;
  blackhole(): void;
  /** Only the connections that sent a LISTEN, and those that send one until restore(). */
  blackholeListeners(): void;
  down(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startDbProxy(databaseUrl: string): Promise<DbProxy> {
  const target = new URL(databaseUrl);
  let mode: 'pass' | 'blackhole' | 'down' = 'pass';
  let listenersLost = false;
  /** A LISTEN statement (its channel quoted, as postgres.js and credvault write it). */
  const LISTEN = /\blisten\s+"[^"]+"/i;
  type Pair = { client: Socket; server: Socket | null; lost: boolean; listens: boolean };
  const pairs = new Set<Pair>();
  const cut = (pair: Pair) => {
    pair.lost = true;
    pair.client.unpipe();
    pair.server?.unpipe();
    // Read and dropped, so that neither side ever hears from the other again.
    pair.client.removeAllListeners('data').on('data', () => {});
    pair.server?.removeAllListeners('data').on('data', () => {});
    pair.client.resume();
    pair.server?.resume();
  };
  const proxy: Server = createServer((client) => {
    client.on('error', () => {});
    if (mode === 'down') return void client.destroy();
    const pair: Pair = { client, server: null, lost: false, listens: false };
    pairs.add(pair);
    client.on('close', () => {
      pairs.delete(pair);
      pair.server?.destroy();
    });
    if (mode === 'blackhole') return cut(pair);
    const server = createConnection(Number(target.port || 5432), target.hostname);
    pair.server = server;
    server.on('error', () => client.destroy());
    server.on('close', () => {
      // A server connection ends with its client, unless the client no longer hears anything.
      if (!pair.lost) client.destroy();
    });
    // Looked at on its way, to know the connections that LISTEN.
    client.on('data', (chunk: Buffer) => {
      if (!pair.listens && LISTEN.test(chunk.toString('latin1'))) pair.listens = true;
      if (pair.listens && listenersLost) return cut(pair);
      if (!server.write(chunk)) {
        client.pause();
        server.once('drain', () => client.resume());
      }
    });
    client.on('end', () => {
      if (!pair.lost) server.end();
    });
    server.pipe(client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address() as { port: number };
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);
  return {
    url: url.href,
    blackhole() {
      mode = 'blackhole';
      for (const pair of pairs) cut(pair);
    },
    blackholeListeners() {
      listenersLost = true;
      for (const pair of pairs) if (pair.listens) cut(pair);
    },
    down() {
      mode = 'down';
      for (const pair of pairs) {
        pair.client.destroy();
        pair.server?.destroy();
      }
    },
    restore() {
      mode = 'pass';
      listenersLost = false;
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.server?.destroy();
      }
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}
