import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fastTokenGet, getFromDaemon, parseAnswer } from '../../src/cli/fast-token.js';

/**
 * `token get`'s fast path and `doctor` ask a running daemon with a request written on a bare socket
 * (src/cli/fast-token.ts): against node:http servers, as the daemon is, and raw ones that answer in
 * shapes the daemon never uses.
 */
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const clean of cleanups.splice(0).reverse()) await clean();
});

function track(server: Server): Server {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return server;
}

async function httpServer(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = track(createHttpServer(handler) as unknown as Server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { kind: 'tcp' as const, host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

/** A server that writes `pieces` (with a pause between them) to whoever connects, then maybe closes. */
async function rawServer(pieces: Array<string | Buffer>, close = true) {
  const requests: string[] = [];
  const server = track(
    createServer((socket) => {
      // The client may reset the connection (it stops reading a too-large answer): not this test's error.
      socket.on('error', () => {});
      socket.once('data', async (d: Buffer) => {
        requests.push(d.toString('latin1'));
        for (const piece of pieces) {
          socket.write(piece);
          await new Promise((r) => setTimeout(r, 20));
        }
        if (close) socket.end();
      });
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { listen: { kind: 'tcp' as const, host: '127.0.0.1', port }, requests };
}

describe('the daemon client', () => {
  it('sends a GET with its headers and reads the sized answer of a node:http server, over TCP and a unix socket', async () => {
    const seen: Array<{ method?: string; url?: string; headers: IncomingMessage['headers'] }> = [];
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      seen.push({ method: req.method, url: req.url, headers: req.headers });
      const text = JSON.stringify({ access_token: 'ya29.é€', actor: req.headers['x-credvault-actor'] });
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const tcp = await httpServer(handler);
    const answer = await getFromDaemon(
      tcp,
      '/v1/connections/acct%20a/token?min_ttl=60',
      { authorization: 'Bearer cvc_x', 'x-credvault-actor': 'José' },
      2_000,
    );
    expect(answer).toEqual({ status: 201, body: JSON.stringify({ access_token: 'ya29.é€', actor: 'José' }) });
    expect(seen[0]).toMatchObject({
      method: 'GET',
      url: '/v1/connections/acct%20a/token?min_ttl=60',
      headers: { host: 'localhost', authorization: 'Bearer cvc_x', connection: 'close' },
    });

    const dir = mkdtempSync(join(tmpdir(), 'credvault-client-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'daemon.sock');
    const server = track(createHttpServer(handler) as unknown as Server);
    await new Promise<void>((r) => server.listen(path, r));
    const overUnix = await getFromDaemon({ kind: 'unix', path }, '/healthz', {}, 2_000);
    expect(overUnix.status).toBe(201);
    expect(seen).toHaveLength(2);
  });

  it('assembles an answer that arrives in pieces, a UTF-8 character split between two', async () => {
    const body = Buffer.from('{"name":"Café"}');
    const split = body.indexOf(Buffer.from('é')) + 1;
    const { listen } = await rawServer(
      [
        'HTTP/1.1 200 OK\r\nContent-Le',
        `ngth: ${body.length}\r\nContent-Type: application/json\r\n\r\n`,
        body.subarray(0, split),
        body.subarray(split),
      ],
      false,
    );
    expect(await getFromDaemon(listen, '/x', {}, 2_000)).toEqual({ status: 200, body: '{"name":"Café"}' });
  });

  it('refuses answers in shapes the daemon never sends, and says why', async () => {
    const chunked = await httpServer((_req, res) => {
      res.write('{"a":');
      res.end('1}');
    });
    await expect(getFromDaemon(chunked, '/x', {}, 2_000)).rejects.toThrow('Transfer-Encoding');
    const cut = await rawServer(['HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"short":']);
    await expect(getFromDaemon(cut.listen, '/x', {}, 2_000)).rejects.toThrow(
      'the daemon closed the connection before it answered in full',
    );
    const notHttp = await rawServer(['SSH-2.0-OpenSSH\r\n\r\n']);
    await expect(getFromDaemon(notHttp.listen, '/x', {}, 2_000)).rejects.toThrow('not HTTP/1.1');
    const unsized = await rawServer(['HTTP/1.1 200 OK\r\n\r\n{}']);
    await expect(getFromDaemon(unsized.listen, '/x', {}, 2_000)).rejects.toThrow('no Content-Length');
    const huge = await rawServer([`HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n${'x'.repeat(70_000)}`]);
    await expect(getFromDaemon(huge.listen, '/x', {}, 2_000)).rejects.toThrow('larger than expected');
    expect(() =>
      parseAnswer(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}')),
    ).toThrow('invalid Content-Length');
    expect(parseAnswer(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{'))).toBeNull();
  });

  it('gives up on a daemon that does not answer', async () => {
    const silent = await rawServer([], false);
    const started = Date.now();
    await expect(getFromDaemon(silent.listen, '/x', {}, 300)).rejects.toThrow('no answer within 0.3 s');
    expect(Date.now() - started).toBeLessThan(2_000);
    await expect(
      getFromDaemon({ kind: 'unix', path: join(tmpdir(), 'no-such-daemon.sock') }, '/x', {}, 300),
    ).rejects.toThrow('ENOENT');
  });

  it('never sends a header or a path that could end its line: nothing reaches the daemon', async () => {
    const { listen, requests } = await rawServer(['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n']);
    await expect(
      getFromDaemon(listen, '/x', { 'x-credvault-actor': 'eve\r\nAuthorization: Bearer stolen' }, 2_000),
    ).rejects.toThrow('header x-credvault-actor cannot be sent as it is');
    await expect(getFromDaemon(listen, '/x', { 'x-credvault-actor': '李' }, 2_000)).rejects.toThrow(
      'cannot be sent',
    );
    await expect(getFromDaemon(listen, '/x HTTP/1.1\r\nX-A: b', {}, 2_000)).rejects.toThrow('path');
    await new Promise((r) => setTimeout(r, 50));
    expect(requests).toEqual([]);
  });

  it('prints only a token document: any other 200 sends token get down its full path', async () => {
    const home = mkdtempSync(join(tmpdir(), 'credvault-fast-'));
    cleanups.push(() => rmSync(home, { recursive: true, force: true }));
    mkdirSync(join(home, 'run'));
    const answer = (body: string) =>
      `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    // The caller names its key to the daemon (a key is configured: without one the daemon is not asked).
    const env = {
      CREDVAULT_HOME: home,
      CREDVAULT_ACTOR: 'ops',
      CREDENTIAL_MASTER_KEY: `${randomBytes(32).toString('base64url')}=`,
    } as NodeJS.ProcessEnv;
    const printed: string[] = [];
    // A live process that /proc shows as a daemon (a run file's pid must be one).
    const daemon = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'daemon']);
    cleanups.push(() => {
      daemon.kill('SIGKILL');
    });
    const pid = daemon.pid!;
    for (const body of ['{"status":"ok"}', '{"access_token":"","token_type":"Bearer"}', 'null', 'not json']) {
      // A run file whose pid is alive and whose port now answers something else.
      const { listen } = await rawServer([answer(body)]);
      writeFileSync(
        join(home, 'run', 'daemon.json'),
        JSON.stringify({ pid, listen, token: 'cvc_x', database: 'embedded' }),
      );
      expect(await fastTokenGet(['token', 'get', 'acct'], env, (t) => printed.push(t)), body).toBe(false);
    }
    expect(printed).toEqual([]);
    const doc = { access_token: 'ya29.x', token_type: 'Bearer', expires_at: null };
    const { listen } = await rawServer([answer(JSON.stringify(doc))]);
    writeFileSync(
      join(home, 'run', 'daemon.json'),
      JSON.stringify({ pid, listen, token: 'cvc_x', database: 'embedded' }),
    );
    expect(
      await fastTokenGet(['token', 'get', 'acct', '--format', 'header'], env, (t) => printed.push(t)),
    ).toBe(true);
    expect(printed).toEqual(['Authorization: Bearer ya29.x\n']);
    // No key configured: the daemon is not asked (the full path says no key is configured, exit 6).
    const keyless = await rawServer([answer(JSON.stringify(doc))]);
    writeFileSync(
      join(home, 'run', 'daemon.json'),
      JSON.stringify({ pid, listen: keyless.listen, token: 'cvc_x', database: 'embedded' }),
    );
    const { CREDENTIAL_MASTER_KEY: _, ...withoutKey } = env;
    expect(await fastTokenGet(['token', 'get', 'acct'], withoutKey, (t) => printed.push(t))).toBe(false);
    expect(keyless.requests).toEqual([]);
    // The same run file naming a live process that is no daemon (its pid reused): not asked at all.
    const reused = await rawServer([answer(JSON.stringify(doc))]);
    writeFileSync(
      join(home, 'run', 'daemon.json'),
      JSON.stringify({ pid: process.pid, listen: reused.listen, token: 'cvc_x', database: 'embedded' }),
    );
    expect(await fastTokenGet(['token', 'get', 'acct'], env, (t) => printed.push(t))).toBe(false);
    expect(reused.requests).toEqual([]);
  });
});
