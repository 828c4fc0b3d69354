import { describe, expect, it } from 'vitest';
import { SystemdNotifier } from '../../src/daemon/notify.js';

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
});
