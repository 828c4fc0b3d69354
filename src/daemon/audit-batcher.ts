import * as clientStore from '../db/store/clients.js';
import { type AuditEntry, recordAudit } from '../services/audit.js';
import type { ServiceContext } from '../services/context.js';
import type { DaemonMetrics } from './metrics.js';

interface Pending {
  entry: AuditEntry;
  clientId: string | null;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Audit records of served tokens, written in batches: concurrent requests share one transaction, and
 * each request is answered only after its batch commits. A failed batch fails every request in it
 * (fail closed) without a database round trip per request in series.
 */
export class AuditBatcher {
  readonly #ctx: ServiceContext;
  readonly #metrics: DaemonMetrics;
  readonly #maxBatch: number;
  #queue: Pending[] = [];
  #flushing: Promise<void> | null = null;
  #scheduled = false;

  constructor(ctx: ServiceContext, metrics: DaemonMetrics, maxBatch = 500) {
    this.#ctx = ctx;
    this.#metrics = metrics;
    this.#maxBatch = maxBatch;
  }

  write(entry: AuditEntry, clientId: string | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ entry, clientId, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing) return;
    this.#scheduled = true;
    // Let the requests of this turn of the event loop join the batch.
    setImmediate(() => {
      this.#scheduled = false;
      this.#flushing = this.#flush().finally(() => {
        this.#flushing = null;
        if (this.#queue.length) this.#schedule();
      });
    });
  }

  async #flush(): Promise<void> {
    while (this.#queue.length) {
      const batch = this.#queue.splice(0, this.#maxBatch);
      try {
        await this.#ctx.transaction(async (tx) => {
          await recordAudit(
            tx,
            this.#ctx.actor,
            batch.map((p) => p.entry),
          );
          const clients = [
            ...new Set(batch.map((p) => p.clientId).filter((id): id is string => id !== null)),
          ];
          await clientStore.touch(tx, clients);
        });
        this.#metrics.auditBatch.observe(batch.length);
        for (const p of batch) p.resolve();
      } catch (error) {
        for (const p of batch) p.reject(error);
      }
    }
  }

  /** Waits for every queued record to be written (or refused). */
  async drain(): Promise<void> {
    while (this.#flushing || this.#queue.length || this.#scheduled) {
      await (this.#flushing ?? new Promise((resolve) => setImmediate(resolve)));
    }
  }
}
