/**
 * `token get` through a running daemon: no database driver, no CLI framework, one request on the
 * daemon's local endpoint with the credential it leaves in a 0600 file beside the data. Built twice:
 * into the CLI bundle, and as dist/fast-token.cjs that bin/credvault calls before loading anything
 * else. Any doubt (no daemon, another database, a refusal) returns null and the full path runs.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { defaultHome, MAX_MIN_TTL_SECONDS, osUser } from '../config.js';
import { configuredKeyLabel } from '../crypto/key-sources.js';
import { urlWithoutPassword } from '../util/database-url.js';

export interface TokenDocument {
  access_token: string;
  token_type: string;
  expires_at: string | null;
  connection_id: string;
  platform: string;
  external_account_id: string;
}

export interface RunFile {
  pid: number;
  listen: { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };
  token: string;
  database: string;
}

/** The home config.ts resolves without flags (config.ts loads nothing but Node's own modules). */
function homeFromEnv(env: NodeJS.ProcessEnv): string {
  return resolve((env.CREDVAULT_HOME ?? '').trim() || defaultHome(env));
}

/** Which database a process means, in the form the daemon writes to its run file. */
export function databaseLabel(url: string | null | undefined): string {
  if (!url?.trim()) return 'embedded';
  return urlWithoutPassword(url) ?? 'unparsable';
}

/** The local CLI's way in: written 0600 next to the data by the daemon. */
export function runFilePath(home: string): string {
  return join(home, 'run', 'daemon.json');
}

/** The run file of a daemon that is running (its process is alive), or null. */
export function readRunFile(home: string): RunFile | null {
  try {
    const run = JSON.parse(readFileSync(runFilePath(home), 'utf8')) as RunFile;
    process.kill(run.pid, 0);
    return isDaemonProcess(run.pid) ? run : null;
  } catch {
    return null;
  }
}

/**
 * Whether a live pid is still a credvault daemon: after a crash and a reboot (or in a container) the
 * run file's pid may belong to another process of the same user. Where /proc cannot tell, the live
 * pid is taken at its word.
 */
function isDaemonProcess(pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return true;
  }
  return cmdline.split('\0').includes('daemon');
}

export async function tokenFromDaemon(
  env: NodeJS.ProcessEnv,
  ref: string,
  minTtl: number,
  format: 'raw' | 'json' | 'header' = 'raw',
): Promise<TokenDocument | null> {
  const home = homeFromEnv(env);
  const run = readRunFile(home);
  if (!run || run.database !== databaseLabel(env.DATABASE_URL)) return null;
  // The daemon serves only a caller configured with its own key (no key, a wrong one: the full path).
  const key = configuredKeyLabel(env, home);
  if (!key) return null;
  const who = env.CREDVAULT_ACTOR?.trim() || osUser(env);
  try {
    const { status, body } = await getFromDaemon(
      run.listen,
      `/v1/connections/${encodeURIComponent(ref)}/token?min_ttl=${minTtl}`,
      // Percent-encoded: any name (a space, an umlaut, CJK) reaches the audit row as the full path
      // would write it.
      {
        authorization: `Bearer ${run.token}`,
        'x-credvault-actor': encodeURIComponent(who),
        'x-credvault-key': key,
        // Its audit record says what the full path's would: `token get --format raw`.
        'x-credvault-format': format,
      },
      10_000,
    );
    if (status !== 200) return null;
    // Only a token document is printed (a reused pid could put some other server behind the run file).
    const doc = JSON.parse(body) as Partial<TokenDocument> | null;
    return typeof doc?.access_token === 'string' && doc.access_token && typeof doc.token_type === 'string'
      ? (doc as TokenDocument)
      : null;
  } catch {
    return null;
  }
}

/** The most a daemon's answer may hold (a token document is under 1 KiB; /healthz a little more). */
const MAX_ANSWER = 64 * 1024;

/** Header values Node's own client would send (visible Latin-1 and tabs): nothing that ends a line. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * One GET on a running daemon's local endpoint: its status and body (or why there is none).
 *
 * Written on a bare socket rather than with node:http: loading node:http, and its agent working out a
 * TLS server name even for a plain request (which compiles Node's IPv6 expression), cost `token get`
 * about 10 ms of a 50 ms call. The peer is credvault's own daemon, which answers every request with a
 * Content-Length; an answer in any other shape is refused here (and `token get` takes its full path).
 */
export function getFromDaemon(
  listen: RunFile['listen'],
  path: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const lines = [`GET ${path} HTTP/1.1`, 'Host: localhost'];
    for (const [name, value] of Object.entries({ ...headers, connection: 'close' })) {
      if (!/^[A-Za-z0-9-]+$/.test(name) || !HEADER_VALUE.test(value)) {
        reject(new Error(`header ${name} cannot be sent as it is`));
        return;
      }
      lines.push(`${name}: ${value}`);
    }
    if (!/^\/[\x21-\x7e]*$/.test(path)) {
      reject(new Error(`path ${JSON.stringify(path)} cannot be sent as it is`));
      return;
    }
    const socket = listen.kind === 'unix' ? connect(listen.path) : connect(listen.port, listen.host);
    let received: Buffer = Buffer.alloc(0);
    const settle = (error: Error | null, answer?: { status: number; body: string }) => {
      socket.destroy();
      if (error) reject(error);
      else resolve(answer!);
    };
    socket.setTimeout(timeoutMs, () => settle(new Error(`no answer within ${timeoutMs / 1000} s`)));
    socket.on('error', (error) => settle(error));
    socket.on('data', (chunk: Buffer) => {
      received = received.length ? Buffer.concat([received, chunk]) : chunk;
      if (received.length > MAX_ANSWER) return settle(new Error('the answer is larger than expected'));
      try {
        const answer = parseAnswer(received);
        if (answer) settle(null, answer);
      } catch (error) {
        settle(error as Error);
      }
    });
    socket.on('end', () => settle(new Error('the daemon closed the connection before it answered in full')));
    socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  });
}

/** The answer in `data` once it is whole (null until then); throws on anything but a sized answer. */
export function parseAnswer(data: Buffer): { status: number; body: string } | null {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const [statusLine, ...fields] = data.subarray(0, end).toString('latin1').split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine!)?.[1];
  if (!status) throw new Error('the answer is not HTTP/1.1');
  let length: number | null = null;
  for (const field of fields) {
    const colon = field.indexOf(':');
    const name = field.slice(0, colon).trim().toLowerCase();
    const value = field.slice(colon + 1).trim();
    if (name === 'transfer-encoding') throw new Error('the answer is not sized (Transfer-Encoding)');
    if (name === 'content-length') {
      if (!/^\d{1,6}$/.test(value) || (length !== null && length !== Number(value))) {
        throw new Error('the answer has an invalid Content-Length');
      }
      length = Number(value);
    }
  }
  if (length === null) throw new Error('the answer has no Content-Length');
  const body = data.subarray(end + 4);
  if (body.length < length) return null;
  return { status: Number(status), body: body.subarray(0, length).toString('utf8') };
}

/** What `token get` prints for the formats the daemon can answer alone. */
export function formatToken(doc: TokenDocument, format: 'raw' | 'json' | 'header'): string {
  if (format === 'raw') return `${doc.access_token}\n`;
  if (format === 'header') return `Authorization: ${doc.token_type} ${doc.access_token}\n`;
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/**
 * bin/credvault's fast path: `token get CONN [--min-ttl N] [--format raw|json|header] [--json]` and
 * nothing else. Resolves true when it printed the token.
 */
export async function fastTokenGet(
  argv: string[],
  env: NodeJS.ProcessEnv,
  write: (text: string) => void,
): Promise<boolean> {
  if (argv[0] !== 'token' || argv[1] !== 'get' || !argv[2] || argv[2].startsWith('-')) return false;
  let minTtl = 60;
  let format: 'raw' | 'json' | 'header' | null = null;
  let json = false;
  for (let i = 3; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--json') json = true;
    else if (arg === '--min-ttl' && /^\d{1,8}$/.test(argv[i + 1] ?? '')) minTtl = Number(argv[++i]);
    else if (arg === '--format' && ['raw', 'json', 'header'].includes(argv[i + 1] ?? '')) {
      format = argv[++i] as 'raw' | 'json' | 'header';
    } else return false;
  }
  if (minTtl > MAX_MIN_TTL_SECONDS || (json && format && format !== 'json')) return false;
  const chosen = format ?? (json ? 'json' : 'raw');
  const doc = await tokenFromDaemon(env, argv[2], minTtl, chosen);
  if (!doc) return false;
  write(formatToken(doc, chosen));
  return true;
}
