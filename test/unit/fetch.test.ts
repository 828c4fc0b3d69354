import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as oauth from 'oauth4webapi';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferedResponse, isResponse, MAX_BODY_BYTES, platformFetch } from '../../src/providers/fetch.js';
import { networkFailure } from '../../src/providers/http.js';

/** The platforms' HTTP client (node:http under a fetch-shaped function), against local servers. */
const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: (req: IncomingMessage, body: string, res: ServerResponse) => void) {
  const connections: number[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => {
      body += d;
    });
    req.on('end', () => handler(req, body, res));
  });
  server.on('connection', (socket) => connections.push(socket.remotePort ?? 0));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections };
}

describe('platformFetch', () => {
  it('sends a form like fetch does and gives back an answer read like a Response, on one kept-alive connection', async () => {
    const seen: Array<{
      method: string;
      type: string;
      length: string;
      body: string;
      ua: string;
      encoding: string;
    }> = [];
    const { url, connections } = await serve((req, body, res) => {
      seen.push({
        method: req.method!,
        type: req.headers['content-type']!,
        length: req.headers['content-length']!,
        body,
        ua: req.headers['user-agent']!,
        encoding: req.headers['accept-encoding']!,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'abc' });
      res.end(JSON.stringify({ access_token: 'at-1', n: seen.length }));
    });
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'r t/é' });
    const first = await platformFetch(`${url}/token`, {
      method: 'POST',
      headers: { 'User-Agent': 'credvault/test' },
      body: form,
    });
    // A Response as oauth4webapi checks one (its prototype's tag), and as ours (isResponse).
    expect(Object.getPrototypeOf(first)[Symbol.toStringTag]).toBe('Response');
    expect(isResponse(first)).toBe(true);
    expect(first.status).toBe(200);
    expect(first.ok).toBe(true);
    expect(first.headers.get('x-request-id')).toBe('abc');
    const copy = first.clone();
    expect(first.bodyUsed).toBe(false);
    expect(await first.json()).toEqual({ access_token: 'at-1', n: 1 });
    // Read once, as fetch's: a second read fails, a copy made before still reads.
    expect(first.bodyUsed).toBe(true);
    await expect(first.text()).rejects.toThrow(TypeError);
    expect(() => first.clone()).toThrow(TypeError);
    expect(await new Response(copy.body).text()).toBe('{"access_token":"at-1","n":1}');
    expect(copy.bodyUsed).toBe(true);
    const second = await platformFetch(new URL(`${url}/token`), { method: 'POST', body: form });
    expect(await second.json()).toEqual({ access_token: 'at-1', n: 2 });
    expect(seen[0]).toEqual({
      method: 'POST',
      type: 'application/x-www-form-urlencoded;charset=UTF-8',
      length: String(Buffer.byteLength(form.toString())),
      body: form.toString(),
      ua: 'credvault/test',
      // Else a server may answer in any coding (RFC 9110 §12.5.3), which this does not decode.
      encoding: 'identity',
    });
    expect(new URLSearchParams(seen[0]!.body).get('refresh_token')).toBe('r t/é');
    expect(connections).toHaveLength(1);
  });

  it('hands back redirects without following them, or refuses them', async () => {
    const { url } = await serve((_req, _body, res) => {
      res.writeHead(302, { location: 'https://elsewhere.example/' });
      res.end('moved');
    });
    const manual = await platformFetch(url, { redirect: 'manual' });
    expect(manual.status).toBe(302);
    expect(manual.headers.get('location')).toBe('https://elsewhere.example/');
    const refused = await platformFetch(url, { redirect: 'error' }).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(TypeError);
    expect(((refused as TypeError).cause as Error).message).toMatch(/redirected \(HTTP 302\)/);
  });

  it('rejects with the signal’s reason when aborted', async () => {
    const { url } = await serve(() => {}); // never answers
    const controller = new AbortController();
    const pending = platformFetch(url, { signal: controller.signal });
    setTimeout(() => controller.abort(new DOMException('took too long', 'TimeoutError')), 50);
    const error = (await pending.catch((e: unknown) => e)) as DOMException;
    expect(error.name).toBe('TimeoutError');
    expect(error.message).toBe('took too long');
  });

  it('fails as a network failure when the answer is cut short, too large, or nobody listens', async () => {
    const { url } = await serve((req, _body, res) => {
      if (req.url === '/short') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('{"partial":');
        setTimeout(() => res.socket?.destroy(), 20);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(Buffer.alloc(MAX_BODY_BYTES + 1, 0x20));
      }
    });
    for (const path of ['/short', '/huge']) {
      const error = (await platformFetch(`${url}${path}`).catch((e: unknown) => e)) as TypeError;
      expect(error, path).toBeInstanceOf(TypeError);
      expect(error.message).toBe('fetch failed');
    }
    const closed = await serve(() => {});
    servers.pop()!.close();
    const refused = (await platformFetch(closed.url).catch((e: unknown) => e)) as TypeError;
    expect((refused.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
  });

  it('answers 204 with no body', async () => {
    const { url } = await serve((_req, _body, res) => {
      res.writeHead(204);
      res.end();
    });
    const response = await platformFetch(url, { method: 'POST', body: new URLSearchParams({ token: 'x' }) });
    expect(response.status).toBe(204);
    expect(await response.text()).toBe('');
  });

  it('sends a GET again until a new connection takes it when kept-alive ones are closed under it; never a POST', async () => {
    // The server closes a connection as its second request arrives, unanswered: what a request sees
    // when it goes out on a kept-alive connection that the server has just timed out (servers close
    // their idle connections together: here both of the two kept alive).
    const requests = new WeakMap<object, number>();
    const seen: string[] = [];
    const { url, connections } = await serve((req, _body, res) => {
      seen.push(req.method!);
      const n = (requests.get(req.socket) ?? 0) + 1;
      requests.set(req.socket, n);
      if (n > 1) {
        req.socket.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ connection: connections.length }));
    });
    const first = await Promise.all([platformFetch(`${url}/accounts`), platformFetch(`${url}/accounts`)]);
    expect(first.map((r) => r.status)).toEqual([200, 200]);
    expect(connections).toHaveLength(2);
    const again = await platformFetch(`${url}/accounts`);
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ connection: 3 });
    expect(seen).toEqual(['GET', 'GET', 'GET', 'GET', 'GET']);

    // A POST (a refresh: its refresh token may be spent by the request the server read) fails instead.
    const post = (await platformFetch(`${url}/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'refresh_token' }),
    }).catch((e: unknown) => e)) as TypeError;
    expect(post).toBeInstanceOf(TypeError);
    expect((post.cause as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    expect(seen).toEqual(['GET', 'GET', 'GET', 'GET', 'GET', 'POST']);
    expect(connections).toHaveLength(3);
  });

  const openssl = spawnSync('openssl', ['version']).status === 0;
  it.runIf(openssl)('speaks https, trusting what the process trusts (NODE_EXTRA_CA_CERTS)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'credvault-tls-'));
    try {
      const made = spawnSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ]);
      expect(made.status, made.stderr.toString()).toBe(0);
      const server = createHttpsServer(
        { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
        (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"over":"tls"}');
        },
      );
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const url = `https://localhost:${(server.address() as AddressInfo).port}/`;
      const script = join(dir, 'call.mts');
      const module = fileURLToPath(new URL('../../src/providers/fetch.ts', import.meta.url));
      writeFileSync(
        script,
        `import { platformFetch } from ${JSON.stringify(module)};
         const r = await platformFetch(process.argv[2]).catch((e) => ({ json: async () => ({ failed: String(e.cause?.code ?? e) }) }));
         console.log(JSON.stringify(await r.json()));`,
      );
      const run = (env: Record<string, string | undefined>) =>
        new Promise<string>((resolve) => {
          // Asynchronous: this process's server must answer while the child calls it.
          const merged = Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined);
          const child = spawn(process.execPath, ['--import', 'tsx', script, url], {
            env: Object.fromEntries(merged),
          });
          let out = '';
          child.stdout.on('data', (d: Buffer) => {
            out += d;
          });
          child.on('close', () => resolve(out.trim()));
        });
      expect(JSON.parse(await run({ NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') }))).toEqual({ over: 'tls' });
      // Without the certificate, the server is not trusted.
      expect(JSON.parse(await run({ NODE_EXTRA_CA_CERTS: undefined }))).toEqual({
        failed: 'DEPTH_ZERO_SELF_SIGNED_CERT',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('BufferedResponse read by oauth4webapi', () => {
  const as = { issuer: 'https://platform.example' };
  const client = { client_id: 'app' };
  const answer = (status: number, body: unknown, type = 'application/json') =>
    new BufferedResponse(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), {
      status,
      headers: new Headers({ 'content-type': type }),
    }).asResponse();

  it('processes a token answer, an OAuth error and a server error as it does fetch’s Response', async () => {
    const ok = await oauth.processRefreshTokenResponse(
      as,
      client,
      answer(200, { access_token: 'at', token_type: 'Bearer', expires_in: 3600 }),
    );
    expect(ok).toMatchObject({ access_token: 'at', token_type: 'bearer', expires_in: 3600 });
    const refused = await oauth
      .processRefreshTokenResponse(as, client, answer(400, { error: 'invalid_grant' }))
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(oauth.ResponseBodyError);
    expect((refused as oauth.ResponseBodyError).error).toBe('invalid_grant');
    const down = await oauth
      .processRefreshTokenResponse(as, client, answer(503, 'busy', 'text/plain'))
      .catch((e: unknown) => e);
    expect(down).toBeInstanceOf(oauth.OperationProcessingError);
    expect(isResponse((down as { cause?: unknown }).cause)).toBe(true);
  });

  it('uses its body once, as fetch’s: asking for the stream does not, reading it does', async () => {
    const response = answer(200, { a: 1 });
    expect(response.body).not.toBeNull();
    expect(response.bodyUsed).toBe(false);
    const copy = response.clone();
    copy.headers.set('x-copy', '1');
    expect(response.headers.get('x-copy')).toBeNull();
    expect(await new Response(response.body).json()).toEqual({ a: 1 });
    expect(response.bodyUsed).toBe(true);
    await expect(response.json()).rejects.toThrow(TypeError);
    expect(await copy.text()).toBe('{"a":1}');
    await expect(new Response(copy.body).text()).rejects.toThrow(TypeError);
  });
});

describe('a request that fails before an answer', () => {
  const fail = (url: string) =>
    platformFetch(url, { method: 'POST', body: 'x', signal: AbortSignal.timeout(5000) }).then(
      () => {
        throw new Error('answered');
      },
      (error: unknown) => networkFailure(error, 'refreshing the token', AbortSignal.timeout(5000)),
    );

  it('is known never to have reached the platform when no connection could be made, or its name did not resolve', async () => {
    // A port nothing listens on: refused.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await fail(`http://127.0.0.1:${port}/token`);
    expect(refused.message).toContain('ECONNREFUSED');
    expect([refused.unsent, refused.unanswered]).toEqual([true, false]);
    // No name service here at all, or a name that does not resolve: either way nothing was sent.
    const unresolved = await fail('http://credvault-test.invalid/token');
    expect([unresolved.unsent, unresolved.unanswered]).toEqual([true, false]);
  });

  it('may have been processed when the connection was dropped after the request went out', async () => {
    const server = createServer((req) => req.socket.destroy());
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const dropped = await fail(`http://127.0.0.1:${(server.address() as AddressInfo).port}/token`);
    expect([dropped.unsent, dropped.unanswered]).toEqual([false, true]);
  });
});
