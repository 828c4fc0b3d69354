import { databaseFailure, errorMessage } from '../db/errors.js';
import * as daemonStore from '../db/store/daemon.js';
import * as tokenStore from '../db/store/tokens.js';
import type { ServiceContext } from '../services/context.js';
import { connectionRef } from '../views.js';
import { type Logger, RepeatedLines } from './log.js';
import type { DaemonMetrics } from './metrics.js';

/**
 * The gauges read from the database (connections by status, the earliest expiry, refresh tokens
 * ending soon): `update()` reads them all, every 15 s. When the database cannot be read they keep
 * their last values rather than vanish, and credvault_database_gauges_updated_timestamp_seconds says
 * when those were read: an alert on `time() - credvault_database_gauges_updated_timestamp_seconds >
 * 120` says they are stale, and the daemon's log says why (once, then a count of the failures now and
 * then, and once more when they are read again). The earliest expiry is counted at each scrape from
 * the time read, so it keeps counting down meanwhile.
 */
export function databaseGauges(
  ctx: ServiceContext,
  metrics: DaemonMetrics,
  log: Logger,
  stopping: () => boolean,
) {
  const warnedEnding = new Map<string, number>();
  // Read every 15 s: counted over a minute at least, so that an outage is one line, then a count.
  const repeats = new RepeatedLines(log, { firstMs: 60_000 });
  let failingSince: Date | null = null;

  const read = async () => {
    const counts = await daemonStore.connectionCounts(ctx.db);
    const next = await tokenStore.nextExpiry(ctx.db);
    // Early warning for refresh tokens with a fixed end (LinkedIn): someone must connect again.
    const ending = await daemonStore.refreshTokensEnding(ctx.db, 14);
    metrics.connections.reset();
    for (const row of counts)
      metrics.connections.set({ platform: row.platform, status: row.status }, Number(row.n));
    // No connection in use any more: NaN (an alert on `< 300` stays quiet), not the last value, nor 0.
    metrics.earliestExpiryAt = next ?? null;
    metrics.refreshTokenEnding.reset();
    const perPlatform = new Map<string, number>();
    for (const row of ending) perPlatform.set(row.platform, (perPlatform.get(row.platform) ?? 0) + 1);
    for (const [platform, n] of perPlatform) metrics.refreshTokenEnding.set({ platform }, n);
    metrics.gaugesUpdated.setToCurrentTime();
    for (const row of ending) {
      const last = warnedEnding.get(row.id) ?? 0;
      if (Date.now() - last < 86_400_000) continue;
      warnedEnding.set(row.id, Date.now());
      const ref = connectionRef({ name: row.name, platform: row.platform, externalAccountId: row.account });
      log.warn(
        `the refresh token of ${ref} ends ${new Date(row.endsAt!).toISOString()}; connect it again before then`,
        {
          event: 'refresh_token_ending',
          connections: [ref],
          connection_ids: [row.id],
          platform: row.platform,
          ends_at: new Date(row.endsAt!).toISOString(),
        },
      );
    }
  };

  return async function update(): Promise<void> {
    try {
      await read();
    } catch (error) {
      // A read the shutdown cut short (the database closed under it) is no outage.
      if (stopping()) return;
      failingSince ??= new Date();
      const what = databaseFailure(error) ?? 'reading them failed';
      repeats.log(
        'warn',
        'gauges',
        `the metrics read from the database could not be updated: ${what}; /metrics keeps their last values (credvault_database_gauges_updated_timestamp_seconds says how old)`,
        { event: 'gauges_stale', error: errorMessage(error) },
      );
      return;
    }
    if (failingSince) {
      repeats.flush('gauges');
      log.info('the metrics read from the database are up to date again', {
        event: 'gauges_updated',
        stale_since: failingSince.toISOString(),
      });
      failingSince = null;
    }
  };
}
