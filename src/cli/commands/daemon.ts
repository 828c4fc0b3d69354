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
  const hidden = hiddenFromUnit(bin);
  if (hidden) {
    rt.out.warn(
      `credvault is installed under ${hidden.under}, which ${hidden.why}, so the service would not start: install credvault system-wide, e.g. \`npm install -g\` as root, outside /home, /root and /tmp`,
    );
  }
  const kmsUri = rt.io.env.CREDENTIAL_KMS_URI?.trim() || null;
  // A line break would end the unit's Environment= line and start another setting.
  if (kmsUri && /\p{Cc}/u.test(kmsUri))
    throw new InvalidInputError(
      'CREDENTIAL_KMS_URI holds a control character, which a unit file cannot carry',
    );
  const text = systemdUnit({ user: opts.user ?? null, bin, listen: DEFAULT_LISTEN, kmsUri });
  if (rt.out.json) return rt.out.writeJson({ unit: text });
  rt.out.raw(text);
}

/**
 * Where the unit's sandbox hides the running binary from the service, if it does: ProtectHome=yes
 * hides /home, /root and /run/user (a credvault installed with nvm, in ~/.local), PrivateTmp=yes
 * gives the service an empty /tmp and /var/tmp of its own (an npx cache, an unpacked tarball).
 */
function hiddenFromUnit(bin: string): { under: string; why: string } | null {
  const home = /^\/(home|root|run\/user)(\/|$)/.exec(bin);
  if (home)
    return { under: bin.split('/').slice(0, 3).join('/'), why: 'ProtectHome=yes hides from the service' };
  const tmp = /^\/(tmp|var\/tmp)(\/|$)/.exec(bin);
  if (tmp) {
    const under = `/${tmp[1]}`;
    return { under, why: `PrivateTmp=yes hides from the service (it gets an empty ${under} of its own)` };
  }
  return null;
}
