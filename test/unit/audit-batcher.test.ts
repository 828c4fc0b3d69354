import { describe, expect, it } from 'vitest';
import { AuditBatcher } from '../../src/daemon/audit-batcher.js';
import type { AuditChain } from '../../src/daemon/audit-chain.js';
import type { DaemonMetrics } from '../../src/daemon/metrics.js';
import type { AuditEntry } from '../../src/services/audit.js';
import type { ServiceContext } from '../../src/services/context.js';

/** A chain whose writes the test commits or fails, one at a time, recording what happened when. */
function standIn(log: string[]) {
  const pending: Array<{ n: number; settle: (error?: Error) => void }> = [];
  let started = 0;
  const chain = {
    write: () => {
      const n = ++started;
      log.push(`start#${n}`);
      return new Promise<void>((resolve, reject) => {
        pending.push({
          n,
          settle: (error) => {
            log.push(error ? `fail#${n}` : `commit#${n}`);
            if (error) reject(error);
            else resolve();
          },
        });
      });
    },
  } as unknown as AuditChain;
  const failed = { rows: 0 };
  const metrics = {
    auditBatch: { observe: () => {} },
    auditFailures: {
      inc: (n = 1) => {
        failed.rows += n;
      },
    },
  } as unknown as DaemonMetrics;
  const batcher = new AuditBatcher({} as ServiceContext, metrics, chain);
  const next = async () => {
    for (let i = 0; i < 50 && !pending.length; i++) await new Promise((r) => setImmediate(r));
    return pending.shift()!;
  };
  return { batcher, next, failed };
}

const entry = (i: number): AuditEntry => ({
  action: 'token.serve',
  targetType: 'connection',
  targetId: String(i),
  outcome: 'success',
});

describe('the audit batcher', () => {
  it('answers a batch only after it commits, and sends the next batch before answering', async () => {
    const log: string[] = [];
    const { batcher, next, failed } = standIn(log);
    const ask = (i: number) =>
      batcher.write(entry(i), null).then(
        () => log.push(`answer${i}`),
        (error: Error) => log.push(`refused${i}: ${error.message}`),
      );
    const first = [ask(1), ask(2)];
    const one = await next();
    expect(log).toEqual(['start#1']);
    // Requests arriving while #1 is written make the next batch.
    const second = [ask(3), ask(4)];
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['start#1']);
    one.settle();
    await Promise.all(first);
    expect(log).toEqual(['start#1', 'commit#1', 'start#2', 'answer1', 'answer2']);

    // A failed batch refuses its own requests only; the next one still goes out.
    const two = await next();
    const third = [ask(5)];
    let drained = false;
    const drain = batcher.drain().then(() => {
      drained = true;
    });
    two.settle(new Error('audit is read-only'));
    await Promise.all(second);
    expect(log.slice(5)).toEqual([
      'fail#2',
      'start#3',
      'refused3: audit is read-only',
      'refused4: audit is read-only',
    ]);
    expect(drained).toBe(false);
    // Both refused requests count as audit-write failures (credvault_audit_write_failures_total).
    expect(failed.rows).toBe(2);
    (await next()).settle();
    await Promise.all(third);
    await drain;
    expect(log.slice(9)).toEqual(['commit#3', 'answer5']);
    expect(drained).toBe(true);
  });
});
