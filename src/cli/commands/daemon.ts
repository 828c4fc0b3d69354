import { realpathSync } from 'node:fs';
import { type DaemonFlags, DEFAULT_LISTEN, parseDaemonOptions } from '../../daemon/options.js';
import { systemdUnit } from '../../daemon/unit.js';
import { InvalidInputError, quoted } from '../../errors.js';
import type { Runtime } from '../run.js';

export async function daemon(rt: Runtime, flags: DaemonFlags): Promise<void> {
  const options = parseDaemonOptions(flags);
  // A long-running process: let the heap grow to 1.5× the live data after a full collection, not
  // V8's up-to-4× for a busy process. A sweep of 10,000 refreshes then peaks at about 140 MB of RSS
  // instead of 200, at the same speed (npm run bench -- daemon).
  (await import('node:v8')).setFlagsFromString('--heap-growing-percent=50');
  const { runDaemon } = await import('../../daemon/main.js');
  rt.exitCode = await runDaemon(
    rt.config,
    options,
    rt.io.stderr as NodeJS.WritableStream & { isTTY?: boolean },
    // Its output is its log: JSON lines (as when not on a terminal) under --json.
    rt.out.json ? { jsonLogs: true } : {},
  );
}

export async function unit(rt: Runtime, opts: { user?: string }): Promise<void> {
  if (opts.user !== undefined && !/^[a-z_][a-z0-9_-]{0,31}$/.test(opts.user)) {
    throw new InvalidInputError(`--user must be a system user name (got ${quoted(opts.user)})`);
  }
  const bin = realpathSync(process.argv[1] ?? 'credvault');
  // ProtectHome=yes hides /home, /root and /run/user from the service: a credvault installed there
  // (nvm, ~/.local) would not start.
  if (/^\/(home|root|run\/user)(\/|$)/.test(bin)) {
    rt.out.warn(
      `credvault is installed under ${bin.split('/').slice(0, 3).join('/')}, which ProtectHome=yes hides from the service: install it system-wide (npm install -g as root), or drop ProtectHome= from the unit`,
    );
  }
  const text = systemdUnit({ user: opts.user ?? null, bin, listen: DEFAULT_LISTEN });
  if (rt.out.json) return rt.out.writeJson({ unit: text });
  rt.out.raw(text);
}
