import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SystemdNotifier } from '../../src/daemon/notify.js';
import { systemdUnit, unitWord } from '../../src/daemon/unit.js';

describe('SystemdNotifier', () => {
  it('pings the watchdog at half of WATCHDOG_USEC, and only when systemd asked this process for one', () => {
    const socket = '/run/systemd/notify';
    expect(new SystemdNotifier({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: '30000000' }).watchdogMs).toBe(15_000);
    expect(
      new SystemdNotifier({
        NOTIFY_SOCKET: socket,
        WATCHDOG_USEC: '30000000',
        WATCHDOG_PID: String(process.pid),
      }).watchdogMs,
    ).toBe(15_000);
    // Meant for another process (systemd-run wrappers), or no watchdog, or not under systemd at all.
    expect(
      new SystemdNotifier({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' }).watchdogMs,
    ).toBeNull();
    expect(new SystemdNotifier({ NOTIFY_SOCKET: socket }).watchdogMs).toBeNull();
    expect(new SystemdNotifier({ WATCHDOG_USEC: '30000000' }).watchdogMs).toBeNull();
    expect(new SystemdNotifier({}).enabled).toBe(false);
  });

  it('runs systemd-notify with the socket and without the variables that reach the vault', async () => {
    const root = mkdtempSync(join(tmpdir(), 'credvault-notify-'));
    const saved = {
      PATH: process.env.PATH,
      CREDENTIAL_MASTER_KEY: process.env.CREDENTIAL_MASTER_KEY,
      PGPASSWORD: process.env.PGPASSWORD,
      DATABASE_URL: process.env.DATABASE_URL,
    };
    try {
      const seen = join(root, 'environment');
      writeFileSync(join(root, 'systemd-notify'), `#!/bin/sh\nenv > '${seen}'\n`, { mode: 0o755 });
      process.env.PATH = `${root}:${process.env.PATH}`;
      process.env.CREDENTIAL_MASTER_KEY = 'not-for-systemd-notify';
      // The database given as --database-url: DATABASE_URL unset, the password in PGPASSWORD.
      delete process.env.DATABASE_URL;
      process.env.PGPASSWORD = 'not-for-systemd-notify-either';
      await new SystemdNotifier({ NOTIFY_SOCKET: '/run/systemd/notify' }).ready('serving');
      const environment = readFileSync(seen, 'utf8');
      expect(environment).toMatch(/^NOTIFY_SOCKET=\/run\/systemd\/notify$/m);
      expect(environment).not.toContain('CREDENTIAL_MASTER_KEY');
      expect(environment).not.toContain('PGPASSWORD');
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the unit file', () => {
  it('quotes what a command line in a unit needs quoted: spaces, quotes, % specifiers, $ variables', () => {
    expect(unitWord('/usr/bin/credvault')).toBe('/usr/bin/credvault');
    expect(unitWord('/opt/cred vault/bin/credvault')).toBe('"/opt/cred vault/bin/credvault"');
    expect(unitWord('/opt/100%/credvault')).toBe('"/opt/100%%/credvault"');
    expect(unitWord('/opt/$HOME/x')).toBe('"/opt/$$HOME/x"');
    expect(unitWord('/opt/a"b')).toBe('"/opt/a\\"b"');
  });

  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
  it.runIf(analyze)('an ExecStart under a folder with a space passes systemd-analyze verify', async () => {
    const root = mkdtempSync(join(tmpdir(), 'credvault unit '));
    try {
      const bin = join(root, 'credvault');
      writeFileSync(bin, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      const unit = join(root, 'credvault.service');
      writeFileSync(unit, systemdUnit({ user: 'root', bin, listen: '127.0.0.1:8787' }));
      const verify = spawnSync(analyze!, ['verify', unit], { encoding: 'utf8' });
      expect(`${verify.stdout}${verify.stderr}`).not.toMatch(/is not executable|Failed to parse|Invalid/);
      expect(verify.status, `${verify.stdout}${verify.stderr}`).toBe(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
