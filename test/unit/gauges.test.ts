import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { databaseGauges } from '../../src/daemon/gauges.js';
import { createLogger } from '../../src/daemon/log.js';
import { DaemonMetrics } from '../../src/daemon/metrics.js';

/** The gauges read from the database: a failed read is an outage to log, unless the daemon is stopping. */
describe('databaseGauges', () => {
  const failing = async (stopping: boolean) => {
    const stream = new PassThrough();
    let written = '';
    stream.on('data', (d: Buffer) => {
      written += d.toString();
    });
    // A database that is closed under the read: every statement fails.
    const closed = new Proxy(
      {},
      {
        get: () => () => {
          throw new Error('write CONNECTION_ENDED');
        },
      },
    );
    const ctx = { db: closed } as never;
    const update = databaseGauges(
      ctx,
      new DaemonMetrics(),
      createLogger(stream, 'info', true),
      () => stopping,
    );
    await update();
    await new Promise((r) => setImmediate(r));
    return written;
  };

  it('says the metrics are stale when a read fails while it runs', async () => {
    expect(await failing(false)).toContain('"event":"gauges_stale"');
  });

  it('says nothing of a read its shutdown cut short (the database closed under it)', async () => {
    expect(await failing(true)).toBe('');
  });
});
