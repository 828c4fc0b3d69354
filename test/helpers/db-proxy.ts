/**
 * A TCP proxy in front of the test's PostgreSQL server, to play the network between a daemon and its
 * database going wrong without touching the server (shared by every test): `blackhole()` keeps every
 * connection open and passes nothing more either way, and takes new connections without passing them
 * on (a partition, or a server that accepted and then hung); `down()` closes every connection and
 * each new one at once (a server stopped); `restore()` passes new connections on again. Connections
 * blackholed stay so: what was sent on them is lost.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface DbProxy {
  /** DATABASE_URL through the proxy. */
  url: string;
  blackhole(): void;
  down(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startDbProxy(databaseUrl: string): Promise<DbProxy> {
  const target = new URL(databaseUrl);
  let mode: 'pass' | 'blackhole' | 'down' = 'pass';
  type Pair = { client: Socket; server: Socket | null; lost: boolean };
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
    const pair: Pair = { client, server: null, lost: false };
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
    client.pipe(server);
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
    down() {
      mode = 'down';
      for (const pair of pairs) {
        pair.client.destroy();
        pair.server?.destroy();
      }
    },
    restore() {
      mode = 'pass';
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
