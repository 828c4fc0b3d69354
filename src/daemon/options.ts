import { parseDuration } from '../config.js';
import { InvalidInputError, quoted } from '../errors.js';
import { isLoopbackHost, quotableUrl, socketPathFits, UNIX_SOCKET_PATH_MAX } from '../util/net.js';

/** A daemon refused because another already runs for this home (`who`: its pid, and where it listens if known). */
export function secondDaemonError(home: string, who: string): InvalidInputError {
  return new InvalidInputError(`a credvault daemon (${who}) already runs for ${home}`, {
    hint: 'Stop it first. Daemons on one machine that share a PostgreSQL database need a CREDVAULT_HOME each.',
  });
}

export type Listen = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export interface DaemonOptions {
  listen: Listen;
  refreshWindowMs: number;
  intervalMs: number;
  concurrency: number;
  allowedHosts: string[];
  allowRemote: boolean;
  publicCallbackUrl: string | null;
}

export interface DaemonFlags {
  listen: string;
  refreshWindow: string;
  interval: string;
  concurrency: string;
  allowedHost: string[];
  allowRemote?: boolean;
  publicCallbackUrl?: string;
}

export const DEFAULT_LISTEN = '127.0.0.1:8787';

export function parseListen(value: string): Listen {
  if (value.startsWith('unix:')) {
    const path = value.slice(5);
    if (!path.startsWith('/'))
      throw new InvalidInputError(`--listen unix:PATH needs an absolute path (got ${quoted(value)})`);
    if (!socketPathFits(path)) {
      throw new InvalidInputError(
        `--listen unix:PATH is ${Buffer.byteLength(path)} bytes long, over the ${UNIX_SOCKET_PATH_MAX} a unix socket's path may have here`,
        { hint: 'Give a shorter path (under /run or /tmp, say).' },
      );
    }
    return { kind: 'unix', path };
  }
  const match = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new InvalidInputError(`--listen must be HOST:PORT or unix:PATH (got ${quoted(value)})`);
  }
  return { kind: 'tcp', host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

export function listenLabel(listen: Listen): string {
  return listen.kind === 'unix'
    ? `unix:${listen.path}`
    : `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
}

export function parseDaemonOptions(flags: DaemonFlags): DaemonOptions {
  const listen = parseListen(flags.listen);
  const allowRemote = flags.allowRemote === true;
  if (listen.kind === 'tcp' && !isLoopbackHost(listen.host) && !allowRemote) {
    throw new InvalidInputError(`--listen ${flags.listen} is not a loopback address`, {
      hint: 'Add --allow-remote to listen beyond this machine, and terminate TLS in front of the daemon.',
    });
  }
  const concurrency = Number(flags.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw new InvalidInputError(
      `--concurrency must be a whole number from 1 to 256 (got ${quoted(flags.concurrency)})`,
    );
  }
  let publicCallbackUrl: string | null = null;
  if (flags.publicCallbackUrl) {
    if (!URL.canParse(flags.publicCallbackUrl)) {
      throw new InvalidInputError(
        `--public-callback-url is not a URL: ${quoted(quotableUrl(flags.publicCallbackUrl))}`,
      );
    }
    publicCallbackUrl = flags.publicCallbackUrl;
  }
  return {
    listen,
    refreshWindowMs: parseDuration(flags.refreshWindow, '--refresh-window'),
    intervalMs: parseDuration(flags.interval, '--interval'),
    concurrency,
    allowedHosts: flags.allowedHost.map((h) => h.toLowerCase()),
    allowRemote,
    publicCallbackUrl,
  };
}
