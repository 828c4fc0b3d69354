import * as clientStore from '../db/store/clients.js';
import { type AuditEntry, recordAudit } from '../services/audit.js';
import type { ServiceContext } from '../services/context.js';
import type { DaemonMetrics } from './metrics.js';

interface Pending {
  entry: AuditEntry;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Audit records of served tokens, written in batches: the requests of one turn of the event loop
 * share one transaction, and each request is answered only after its batch committed (fail closed).
 * A failed batch fails every request in it. A few batches may be in flight at once: the next one
 * begins and queues on the chain head inside the database while the previous one commits, so no
 * request waits on a client round trip per request in series.
 */
export class AuditBatcher {
  readonly #ctx: ServiceContext;
  readonly #metrics: DaemonMetrics;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  #queue: Pending[] = [];
  #inFlight = 0;
  #scheduled = false;
  #idle: Array<() => void> = [];
  readonly #usedClients = new Set<string>();

  constructor(
    ctx: ServiceContext,
    metrics: DaemonMetrics,
    options: { maxBatch?: number; maxInFlight?: number } = {},
  ) {
    this.#ctx = ctx;
    this.#metrics = metrics;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#maxInFlight = options.maxInFlight ?? 3;
  }

  write(entry: AuditEntry, clientId: string | null): Promise<void> {
    if (clientId) this.#usedClients.add(clientId);
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ entry, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#maxInFlight || !this.#queue.length) return;
    this.#scheduled = true;
    // Let the requests of this turn of the event loop join the batch.
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#inFlight >= this.#maxInFlight || !this.#queue.length) return;
      const batch = this.#queue.splice(0, this.#maxBatch);
      this.#inFlight += 1;
      void this.#flush(batch).finally(() => {
        this.#inFlight -= 1;
        if (this.#queue.length) this.#schedule();
        else if (this.#inFlight === 0 && !this.#scheduled) for (const done of this.#idle.splice(0)) done();
      });
      if (this.#queue.length) this.#schedule();
    });
  }

  async #flush(batch: Pending[]): Promise<void> {
    try {
      await this.#ctx.transaction((tx) =>
        recordAudit(
          tx,
          this.#ctx.actor,
          batch.map((p) => p.entry),
        ),
      );
      this.#metrics.auditBatch.observe(batch.length);
      for (const p of batch) p.resolve();
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  }

  /** Records when clients were last seen: now and then, not once per request. */
  async touchClients(): Promise<void> {
    if (!this.#usedClients.size) return;
    const ids = [...this.#usedClients];
    this.#usedClients.clear();
    await clientStore.touch(this.#ctx.db, ids);
  }

  /** Waits for every queued record to be written (or refused). */
  drain(): Promise<void> {
    if (!this.#queue.length && this.#inFlight === 0 && !this.#scheduled) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}
