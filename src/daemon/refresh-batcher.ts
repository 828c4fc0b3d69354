import type { GrantRow } from '../db/store/tokens.js';
import type { ServiceContext } from '../services/context.js';
import { type RefreshResult, type ResultWriter, writeResults } from '../services/tokens.js';

interface Pending {
  result: RefreshResult;
  resolve: (row: GrantRow | null) => void;
  reject: (error: unknown) => void;
}

/**
 * The sweep's refresh results, written together: the results that finish during one turn of the
 * event loop share one transaction (each still version-checked on its own), so the audit chain's head
 * is locked once per group instead of once per refresh. Should a group fail, its results are written
 * one by one, so one bad row never costs the others their rotated refresh tokens.
 */
export class RefreshBatcher {
  readonly #ctx: ServiceContext;
  #queue: Pending[] = [];
  #scheduled = false;
  #inFlight = 0;

  constructor(ctx: ServiceContext) {
    this.#ctx = ctx;
  }

  readonly write: ResultWriter = (result) =>
    new Promise((resolve, reject) => {
      this.#queue.push({ result, resolve, reject });
      this.#schedule();
    });

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= 2) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const batch = this.#queue.splice(0, 64);
      if (!batch.length) return;
      this.#inFlight += 1;
      void this.#flush(batch).finally(() => {
        this.#inFlight -= 1;
        if (this.#queue.length) this.#schedule();
      });
      if (this.#queue.length) this.#schedule();
    });
  }

  async #flush(batch: Pending[]): Promise<void> {
    try {
      const rows = await this.#ctx.transaction((tx) =>
        writeResults(
          this.#ctx,
          tx,
          batch.map((p) => p.result),
        ),
      );
      for (const [i, p] of batch.entries()) p.resolve(rows[i] ?? null);
    } catch {
      for (const p of batch) {
        try {
          const [row] = await this.#ctx.transaction((tx) => writeResults(this.#ctx, tx, [p.result]));
          p.resolve(row ?? null);
        } catch (error) {
          p.reject(error);
        }
      }
    }
  }
}
