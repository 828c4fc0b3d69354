import { setTimeout as sleep } from 'node:timers/promises';
import type { Database } from '../db/client.js';
import { type ChangeListener, RETRY_MS } from '../db/listener.js';
import { CHANGES_CHANNEL } from '../db/store/changes.js';
import type { DaemonCache } from './cache.js';
import { type Logger, RepeatedLines } from './log.js';
import type { DaemonMetrics } from './metrics.js';

/**
 * The daemon's LISTEN for changes on a PostgreSQL server, and the cache it gates. The cache answers
 * only while the daemon knows that every change reaches it: from the first heartbeat echoed on, until
 * the LISTEN connection closes or a heartbeat is late (see PostgresListener). Meanwhile tokens and
 * clients are read from the database at every request. Once it listens again, what the cache holds
 * is checked against the database (`check`, with the LISTEN in place: a change committed while it was
 * down was notified to no one), and the cache answers again only if the LISTEN stayed in place through
 * the check. One log line when listening is lost, one when it is back (a LISTEN that comes and goes:
 * counted, see RepeatedLines).
 */
export function listenForChanges(
  listen: NonNullable<Database['listen']>,
  cache: DaemonCache,
  check: () => Promise<boolean>,
  log: Logger,
  metrics: DaemonMetrics,
): ChangeListener {
  const lines = new RepeatedLines(log);
  let lostAt: number | null = null;
  let resuming = false;
  cache.suspend();
  metrics.listening.set(0);

  const resume = () => {
    if (resuming) return;
    resuming = true;
    void (async () => {
      while (listener.listening && !cache.serving) {
        const losses = listener.losses;
        if (!(await check())) {
          // Logged by `check`; tried again while the LISTEN stays.
          await sleep(RETRY_MS);
          continue;
        }
        if (!listener.listening || listener.losses !== losses) continue;
        cache.resume();
        metrics.listening.set(1);
        if (lostAt !== null) {
          const seconds = Math.round((Date.now() - lostAt) / 1000);
          lostAt = null;
          lines.log(
            'info',
            'listen_restored',
            `listening for changes again after ${seconds} s: checked what the cache holds; serving from it again`,
            { event: 'listen_restored', seconds },
          );
        }
      }
    })().finally(() => {
      resuming = false;
    });
  };

  // Its handlers are called only once it has heard from the database, never while it is made.
  const listener = listen(CHANGES_CHANNEL, {
    onPayload: (payload) => cache.invalidate(payload),
    onListening: resume,
    onLost: (reason) => {
      cache.suspend();
      metrics.listening.set(0);
      lostAt ??= Date.now();
      lines.log(
        'warn',
        'listen_lost',
        `not listening for changes (${reason}): tokens and clients are read from the database at every request until it listens again`,
        { event: 'listen_lost', reason },
      );
    },
  });
  return {
    get listening() {
      return listener.listening;
    },
    get losses() {
      return listener.losses;
    },
    async close() {
      await listener.close();
      // What was counted and not yet logged.
      lines.flush();
    },
  };
}
