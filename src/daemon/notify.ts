import { execFile } from 'node:child_process';
import { vaultSecretVariables } from '../crypto/key-sources.js';

/**
 * systemd's notification protocol. Node has no unix datagram sockets, so messages go through
 * `systemd-notify --pid=<our pid>` (the unit sets NotifyAccess=all). Nothing happens when
 * NOTIFY_SOCKET is unset (not started by systemd).
 */
export class SystemdNotifier {
  readonly #socket: string | undefined;
  #watchdog: NodeJS.Timeout | null = null;

  constructor(env: NodeJS.ProcessEnv) {
    this.#socket = env.NOTIFY_SOCKET || undefined;
    const usec = Number(env.WATCHDOG_USEC);
    const forUs = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogMs = this.#socket && usec > 0 && forUs ? Math.max(500, Math.floor(usec / 2000)) : null;
  }

  /** Half of WATCHDOG_USEC, in milliseconds, when systemd asked for a watchdog. */
  readonly watchdogMs: number | null;

  get enabled(): boolean {
    return this.#socket !== undefined;
  }

  send(...assignments: string[]): Promise<void> {
    if (!this.#socket) return Promise.resolve();
    return new Promise((resolve) => {
      // systemd-notify needs the socket, not the variables that reach the vault (the master key…), nor
      // the database's password, whichever way the database was given (DATABASE_URL, --database-url).
      const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: this.#socket };
      for (const name of [...vaultSecretVariables(process.env), 'PGPASSWORD', 'PGPASSFILE']) delete env[name];
      execFile('systemd-notify', [`--pid=${process.pid}`, ...assignments], { env, timeout: 5_000 }, () =>
        resolve(),
      );
    });
  }

  ready(status: string): Promise<void> {
    return this.send('READY=1', `STATUS=${status}`);
  }

  startWatchdog(healthy: () => boolean): void {
    if (!this.watchdogMs || this.#watchdog) return;
    this.#watchdog = setInterval(() => {
      if (healthy()) void this.send('WATCHDOG=1');
    }, this.watchdogMs);
    this.#watchdog.unref();
  }

  async stopping(): Promise<void> {
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#watchdog = null;
    await this.send('STOPPING=1');
  }
}
