import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidInputError, ReauthRequiredError } from '../errors.js';
import { HTML_PAGE_HEADERS, htmlPage } from '../util/html.js';
import { isLoopbackHost } from '../util/net.js';

/**
 * The one-shot callback server of `credvault connect`: it listens on loopback only, on the redirect
 * URI's host and path, answers exactly one callback carrying the expected state, then closes. An
 * answer (a code or an error) under another state, or none, is answered with an error page, nothing
 * is exchanged, and the sign-in ends with exit 2 (cli.md: "a wrong or reused state end with a clear
 * message"): a stale tab's answer, another sign-in's, or a forged one (login CSRF) cannot be told
 * apart here, and waiting on would leave the person at a browser page saying it failed while the
 * terminal waits. A request with neither a code nor an error is no answer: the wait goes on.
 */

export interface LoopbackTarget {
  /**
   * Where to bind: the URI's own address, or for a name (localhost) both 127.0.0.1 and ::1, since a
   * browser may try either (RFC 8252 §8.3): the code must not reach another program on the other one.
   */
  bindHosts: string[];
  port: number;
  path: string;
  /** The redirect URI as it will be sent to the platform (with the real port when it was free). */
  redirectUri(port: number): string;
}

/** Parses a loopback redirect URI, or returns null when it is not one (paste mode). */
export function loopbackTarget(redirectUri: string, anyPort: boolean): LoopbackTarget | null {
  const url = new URL(redirectUri);
  if (url.protocol !== 'http:' || !isLoopbackHost(url.hostname)) return null;
  const bindHosts =
    url.hostname === '[::1]' || url.hostname === '::1'
      ? ['::1']
      : /^127\.\d+\.\d+\.\d+$/.test(url.hostname)
        ? [url.hostname]
        : ['127.0.0.1', '::1'];
  const fixedPort = url.port !== '';
  if (!fixedPort && !anyPort) {
    throw new InvalidInputError(
      `the redirect URI ${redirectUri} has no port, and this platform needs the exact registered one`,
      {
        hint: 'Register a redirect URI with a port (http://localhost:8080/callback) and set it with `apps update --redirect-uri`.',
      },
    );
  }
  return {
    bindHosts,
    port: fixedPort ? Number(url.port) : 0,
    path: url.pathname || '/',
    redirectUri(port: number) {
      const actual = new URL(redirectUri);
      actual.port = String(port);
      // `http://127.0.0.1` has pathname "/" but was registered without it; keep the URI as written.
      const text = actual.toString();
      return redirectUri.endsWith('/') || url.pathname !== '/' ? text : text.replace(/\/$/, '');
    },
  };
}

function listen(host: string, port: number, handler: RequestListener): Promise<Server> {
  const server = createServer(handler);
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/**
 * Listens on every address of the target, on one port: the registered one, or a free one that is
 * free on all of them (tried a few times). An address this machine does not have (no IPv6) is left
 * out; one where another program listens is an error, since the code could reach that program.
 */
async function listenAll(target: LoopbackTarget, handler: RequestListener): Promise<Server[]> {
  for (let attempt = 1; ; attempt++) {
    const servers: Server[] = [];
    let port = target.port;
    let host = target.bindHosts[0]!;
    try {
      for (host of target.bindHosts) {
        try {
          const server = await listen(host, port, handler);
          servers.push(server);
          port = (server.address() as AddressInfo).port;
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (servers.length && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) continue;
          throw error;
        }
      }
      return servers;
    } catch (error) {
      for (const server of servers) server.close();
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' && target.port === 0 && attempt < 5) continue;
      throw new InvalidInputError(
        `cannot listen for the callback on ${host.includes(':') ? `[${host}]` : host}:${port} (${code ?? (error as Error).message})`,
        {
          hint:
            code === 'EADDRINUSE'
              ? 'Another program uses that port; stop it, or register a redirect URI with another port.'
              : 'Check the redirect URI.',
        },
      );
    }
  }
}

function page(title: string, body: string): string {
  return htmlPage(title, body ? [body] : []);
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** The loopback's refusal of an answer whose state this sign-in did not issue (connect records it). */
export class ForeignCallbackError extends InvalidInputError {}

/**
 * The OAuth parameters of a callback that must each come once (RFC 6749 §3.1: "Request and response
 * parameters MUST NOT be included more than once"), and the first of them repeated, or null.
 * `URLSearchParams.get` reads the first of a repeated one, and oauth4webapi refuses the whole answer:
 * a state matched on the first would be used up by an answer that can then never be exchanged.
 */
const SINGLE = ['code', 'state', 'error', 'iss'] as const;
export function repeatedParameter(params: URLSearchParams): string | null {
  return SINGLE.find((name) => params.getAll(name).length > 1) ?? null;
}

/**
 * The refusal of a callback with a repeated parameter (repeatedParameter): no platform answers so, so
 * it was changed on its way (by hand, or by someone else) and nothing in it is taken.
 */
export class MalformedCallbackError extends InvalidInputError {
  constructor(name: string, where: string, what: string, hint: string) {
    super(
      `${where} is malformed: its "${name}" parameter appears more than once (a platform sends each once; the URL was changed on its way); ${what}`,
      { hint },
    );
  }
}

/** No answer came to the loopback in time. */
export class CallbackTimeoutError extends ReauthRequiredError {}

export interface CallbackServer {
  redirectUri: string;
  /** Resolves with the callback's parameters (code, or error) once the right state arrives. */
  result: Promise<URLSearchParams>;
  close(): void;
}

export async function startCallbackServer(
  target: LoopbackTarget,
  expectedState: () => string,
  timeoutMs: number,
  /** The command that starts the sign-in again, for the hints. */
  again = 'credvault connect',
): Promise<CallbackServer> {
  let settle: { resolve: (p: URLSearchParams) => void; reject: (e: Error) => void } | undefined;
  const result = new Promise<URLSearchParams>((resolve, reject) => {
    settle = { resolve, reject };
  });
  let done = false;

  const answer = (res: ServerResponse, status: number, html: string) => {
    res.writeHead(status, { ...HTML_PAGE_HEADERS, connection: 'close' });
    res.end(html);
  };

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (!isLoopbackHost(host))
      return answer(res, 403, page('Refused', 'This address only answers on loopback.'));
    const url = new URL(req.url ?? '/', 'http://loopback');
    if (req.method !== 'GET' || url.pathname !== target.path) return answer(res, 404, page('Not found', ''));
    if (done)
      return answer(res, 410, page('Already done', 'This sign-in has finished. You can close this tab.'));
    const error = url.searchParams.get('error');
    // Neither a code nor an error is no answer from the platform (the redirect URI opened by hand,
    // say): nothing is decided, and the wait goes on.
    if (!error && !url.searchParams.get('code')) {
      return answer(
        res,
        400,
        page('No answer yet', 'This carries no authorization from the platform; credvault is still waiting.'),
      );
    }
    const state = url.searchParams.get('state') ?? '';
    const expected = expectedState();
    done = true;
    // Taken apart differently by whoever reads it (the first `code` here, the whole answer refused at
    // the exchange): refused as it is, before its state is matched or used. It ends the sign-in, as a
    // wrong state does: its code may be the person's, tampered with, and the platform sends no other.
    const repeated = repeatedParameter(url.searchParams);
    if (repeated) {
      res.on('close', () =>
        settle?.reject(
          new MalformedCallbackError(
            repeated,
            'the answer at the callback',
            'nothing was exchanged or stored',
            `Run \`${again}\` again, and finish the sign-in in the browser tab it opens.`,
          ),
        ),
      );
      return answer(
        res,
        400,
        page(
          'Malformed answer',
          `This address carries the "${repeated}" parameter more than once, which no platform sends; nothing was done, and credvault stopped. Run connect again.`,
        ),
      );
    }
    // Until the authorization exists there is no state to match: nothing can be accepted.
    if (!expected || !timingSafeEqual(digest(state), digest(expected))) {
      res.on('close', () =>
        settle?.reject(
          new ForeignCallbackError(
            `the answer at the callback carried ${state ? 'a state this sign-in did not issue' : 'no state'} (a stale browser tab, the answer to another sign-in, or a forged request); nothing was exchanged or stored`,
            { hint: `Run \`${again}\` again, and finish the sign-in in the browser tab it opens.` },
          ),
        ),
      );
      return answer(
        res,
        400,
        page(
          'Not the expected sign-in',
          'This is not the sign-in credvault was waiting for; nothing was done, and credvault stopped. Run connect again.',
        ),
      );
    }
    res.on('finish', () => settle?.resolve(url.searchParams));
    answer(
      res,
      200,
      error
        ? page('Access was not granted', 'credvault stored nothing. You can close this tab.')
        : page(
            'Signed in',
            'credvault received the authorization. You can close this tab and return to the terminal.',
          ),
    );
  };

  const servers = await listenAll(target, handler);
  const port = (servers[0]!.address() as AddressInfo).port;
  const timer = setTimeout(() => {
    settle?.reject(
      new CallbackTimeoutError(
        `no authorization arrived within ${Math.round(timeoutMs / 1000)}s; nothing was stored`,
        {
          hint: `Run \`${again}\` again (and finish in the browser sooner), or give a longer --timeout.`,
        },
      ),
    );
  }, timeoutMs);
  const close = () => {
    clearTimeout(timer);
    for (const server of servers) {
      server.close();
      server.closeAllConnections();
    }
  };
  result.then(close, close);
  return { redirectUri: target.redirectUri(port), result, close };
}
