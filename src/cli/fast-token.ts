/**
 * `token get` through a running daemon: no database driver, no CLI framework, one request on the
 * daemon's local endpoint with the credential it leaves in a 0600 file beside the data. Built twice:
 * into the CLI bundle, and as dist/fast-token.cjs that bin/credvault calls before loading anything
 * else. Any doubt (no daemon, another database, a refusal) returns null and the full path runs.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultHome, osUser } from '../config.js';

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
  try {
    const parsed = new URL(url.trim());
    parsed.password = '';
    return parsed.toString();
  } catch {
    return 'unparsable';
  }
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
    return run;
  } catch {
    return null;
  }
}

export async function tokenFromDaemon(
  env: NodeJS.ProcessEnv,
  ref: string,
  minTtl: number,
): Promise<TokenDocument | null> {
  const run = readRunFile(homeFromEnv(env));
  if (!run || run.database !== databaseLabel(env.DATABASE_URL)) return null;
  const who = env.CREDVAULT_ACTOR?.trim() || osUser(env);
  try {
    const { status, body } = await getFromDaemon(
      run.listen,
      `/v1/connections/${encodeURIComponent(ref)}/token?min_ttl=${minTtl}`,
      { authorization: `Bearer ${run.token}`, 'x-credvault-actor': who },
      10_000,
    );
    return status === 200 ? (JSON.parse(body) as TokenDocument) : null;
  } catch {
    return null;
  }
}

/** One GET on a running daemon's local endpoint: its status and body (or why there is none). */
export async function getFromDaemon(
  listen: RunFile['listen'],
  path: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  // Loaded only when a daemon is there to ask: without one, `token get` should not pay for it.
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...(listen.kind === 'unix' ? { socketPath: listen.path } : { host: listen.host, port: listen.port }),
        path,
        headers: { ...headers, host: 'localhost' },
        timeout: timeoutMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
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
    else if (arg === '--min-ttl' && /^\d{1,5}$/.test(argv[i + 1] ?? '')) minTtl = Number(argv[++i]);
    else if (arg === '--format' && ['raw', 'json', 'header'].includes(argv[i + 1] ?? '')) {
      format = argv[++i] as 'raw' | 'json' | 'header';
    } else return false;
  }
  if (minTtl > 86_400) return false;
  const doc = await tokenFromDaemon(env, argv[2], minTtl);
  if (!doc) return false;
  write(formatToken(doc, format ?? (json ? 'json' : 'raw')));
  return true;
}
