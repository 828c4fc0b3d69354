import type { IncomingMessage, RequestOptions } from 'node:http';

/**
 * `fetch` for the platforms' APIs, over node:http(s) with keep-alive agents.
 *
 * Node's own fetch (undici) costs about twice the CPU of this per call (on the machine of the
 * README's benchmarks, 860 µs against 450 µs for a small token answer: 280 µs for the node:http
 * request, the rest building the Response; most of fetch's is web streams): a daemon refreshing a
 * fleet spends its time there. This one buffers the answer (a token or API answer is small; past
 * MAX_BODY_BYTES it fails) and hands back a BufferedResponse, which oauth4webapi (its customFetch) and
 * our API calls read as they read fetch's Response.
 *
 * What it does as fetch does: the abort signal's reason as the rejection, a network failure as
 * TypeError('fetch failed', { cause }), a form body's content type, redirects never followed
 * ('manual') or refused ('error'), idle connections kept 4 s (undici's default) or less when the
 * server says so, the proxy variables where Node itself honours them (NODE_USE_ENV_PROXY=1 or
 * --use-env-proxy, Node 22.21 and 24.5 on). What it does not do: compression (it asks for the
 * identity coding), cookies.
 *
 * A kept-alive connection can be closed by the server just as a request goes out on it. A GET, HEAD
 * or OPTIONS that fails that way before any answer is sent again, on the next kept-alive connection
 * or a new one, until it goes out on a new one (as Node's documentation advises with
 * `request.reusedSocket`; a server often closes its idle connections together, and each dead one
 * leaves the pool as it fails); a POST is not: a refresh token may have been spent by a request the
 * server did read, and the token service decides what to do about that.
 */

export const MAX_BODY_BYTES = 16 * 1024 * 1024;

type Send = (
  url: URL,
  options: RequestOptions,
  onResponse: (res: IncomingMessage) => void,
) => {
  /** Sent on a connection kept alive from an earlier request. */
  readonly reusedSocket: boolean;
  on(event: 'error', listener: (error: Error & { code?: string }) => void): unknown;
  end(body?: string | Uint8Array): unknown;
};

/**
 * node:http and node:https with their keep-alive agents, loaded at the first platform call: most
 * commands (token get on a valid token among them) make none, and start faster without them.
 */
let clients: Promise<Record<'http:' | 'https:', Send>> | null = null;

function loadClients() {
  clients ??= Promise.all([import('node:http'), import('node:https')]).then(([http, https]) => {
    // Node's global agents use the proxy variables when told to; agents of our own must be told too.
    const useEnvProxy =
      process.env.NODE_USE_ENV_PROXY === '1' || process.execArgv.includes('--use-env-proxy');
    const options = { keepAlive: true, timeout: 4_000, ...(useEnvProxy ? { proxyEnv: process.env } : {}) };
    const httpAgent = new http.Agent(options);
    const httpsAgent = new https.Agent(options);
    return {
      'http:': (url, opts, onResponse) => http.request(url, { ...opts, agent: httpAgent }, onResponse),
      'https:': (url, opts, onResponse) => https.request(url, { ...opts, agent: httpsAgent }, onResponse),
    };
  });
  return clients;
}

export interface PlatformFetchInit {
  method?: string;
  headers?: Record<string, string> | Headers;
  body?: string | URLSearchParams | Uint8Array | ArrayBuffer | ReadableStream | null;
  signal?: AbortSignal | null;
  /** Redirects are never followed: handed back ('manual', the default here) or refused ('error'). */
  redirect?: 'error' | 'manual';
}

/** Methods sent again after a kept-alive connection was closed under them (RFC 9110 §9.2.2). */
const RETRIED = new Set(['GET', 'HEAD', 'OPTIONS']);
/** How a closed kept-alive connection shows when a request is written to it. */
const STALE_SOCKET = new Set(['ECONNRESET', 'EPIPE']);

/** Statuses whose Response must have no body. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * An answer already read into memory, with the part of Response that oauth4webapi and credvault use:
 * status, ok, headers, text(), json(), arrayBuffer(), clone(), bodyUsed, body. It is a Response the
 * way oauth4webapi checks (its prototype's Symbol.toStringTag; see isResponse for ours). undici's
 * Response wraps even a buffered body in web streams: about 30 µs of a daemon's ~450 µs per refresh.
 */
export class BufferedResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  readonly url: string;
  readonly redirected = false;
  readonly type = 'basic';
  readonly #content: Buffer | null;
  #used = false;
  #stream: ReadableStream<Uint8Array> | null | undefined;

  constructor(
    content: Buffer | null,
    init: { status: number; statusText?: string; headers: Headers; url?: string },
  ) {
    if (init.status < 200 || init.status > 599)
      throw new RangeError(`HTTP status ${init.status} is not a response`);
    this.#content = content;
    this.status = init.status;
    this.statusText = init.statusText ?? '';
    this.headers = init.headers;
    this.url = init.url ?? '';
  }

  get [Symbol.toStringTag](): string {
    return 'Response';
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  get bodyUsed(): boolean {
    return this.#used;
  }

  /**
   * The body as a stream, made only when asked for. As fetch's: reading it (not asking for it) uses the
   * body up, and the stream of a body already read fails.
   */
  get body(): ReadableStream<Uint8Array> | null {
    if (this.#stream === undefined) {
      const content = this.#content;
      this.#stream = content
        ? new ReadableStream<Uint8Array>(
            {
              pull: (controller) => {
                if (this.#used) {
                  controller.error(new TypeError('Body is unusable: Body has already been read'));
                  return;
                }
                this.#used = true;
                controller.enqueue(new Uint8Array(content));
                controller.close();
              },
            },
            // Nothing is pulled before someone reads.
            { highWaterMark: 0 },
          )
        : null;
    }
    return this.#stream;
  }

  #take(): Buffer {
    if (this.#used) throw new TypeError('Body is unusable: Body has already been read');
    this.#used = true;
    return this.#content ?? Buffer.alloc(0);
  }

  async text(): Promise<string> {
    return new TextDecoder().decode(this.#take());
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const content = this.#take();
    return content.buffer.slice(content.byteOffset, content.byteOffset + content.byteLength) as ArrayBuffer;
  }

  clone(): BufferedResponse {
    if (this.#used) throw new TypeError('Response.clone: Body has already been consumed.');
    return new BufferedResponse(this.#content, { ...this, headers: new Headers(this.headers) });
  }

  /** As what platformFetch promises (fetch's signature): the members above are the ones read. */
  asResponse(): Response {
    return this as unknown as Response;
  }
}

/** fetch's Response or platformFetch's: what a platform answered. */
export function isResponse(value: unknown): value is Response | BufferedResponse {
  return value instanceof BufferedResponse || value instanceof Response;
}

function toHeaders(res: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

export async function platformFetch(input: string | URL, init: PlatformFetchInit = {}): Promise<Response> {
  const send = await loadClients();
  return new Promise<Response>((resolve, reject) => {
    const url = typeof input === 'string' ? new URL(input) : input;
    const protocol = url.protocol;
    if (protocol !== 'http:' && protocol !== 'https:') {
      reject(new TypeError(`fetch failed: ${protocol} URLs are not supported`));
      return;
    }
    const signal = init.signal ?? undefined;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const headers: Record<string, string> = {};
    const given =
      init.headers instanceof Headers ? init.headers.entries() : Object.entries(init.headers ?? {});
    for (const [name, value] of given) headers[name.toLowerCase()] = value;
    let body: string | Uint8Array | undefined;
    if (init.body instanceof URLSearchParams) {
      body = init.body.toString();
      headers['content-type'] ??= 'application/x-www-form-urlencoded;charset=UTF-8';
    } else if (typeof init.body === 'string') {
      body = init.body;
      headers['content-type'] ??= 'text/plain;charset=UTF-8';
    } else if (init.body instanceof Uint8Array || init.body instanceof ArrayBuffer) {
      body = new Uint8Array(init.body);
    } else if (init.body) {
      reject(new TypeError('fetch failed: a streamed request body is not supported'));
      return;
    }
    // Without it a server may pick any coding (RFC 9110 §12.5.3), and this reads the body as it comes.
    headers['accept-encoding'] = 'identity';
    const method = (init.method ?? 'GET').toUpperCase();
    if (body !== undefined || method === 'POST' || method === 'PUT' || method === 'PATCH') {
      headers['content-length'] = String(body === undefined ? 0 : Buffer.byteLength(body));
    }
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: error }));
    };
    const retry = RETRIED.has(method);
    const attempt = () => {
      let answered = false;
      const req = send[protocol](url, { method, headers, signal }, (res) => {
        answered = true;
        onResponse(res);
      });
      req.on('error', (error) => {
        const stale = !answered && req.reusedSocket && STALE_SOCKET.has(error.code ?? '');
        if (retry && stale && !signal?.aborted) attempt();
        else fail(error);
      });
      req.end(body);
    };
    const onResponse = (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && init.redirect === 'error') {
        res.resume();
        fail(new Error(`the server redirected (HTTP ${status}) and redirects are refused`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) {
          res.destroy();
          fail(new Error(`the answer is larger than ${MAX_BODY_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(new Error('the connection closed before the answer was complete'));
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        try {
          const content = NULL_BODY.has(status) ? null : Buffer.concat(chunks, size);
          resolve(
            new BufferedResponse(content, {
              status,
              statusText: res.statusMessage ?? '',
              headers: toHeaders(res),
              url: url.href,
            }).asResponse(),
          );
        } catch (error) {
          // A status that a Response cannot carry (below 200 or past 599).
          reject(new TypeError('fetch failed', { cause: error }));
        }
      });
    };
    attempt();
  });
}
