import type { GrantRow } from '../db/store/tokens.js';
import * as tokenStore from '../db/store/tokens.js';
import type { ServiceContext } from '../services/context.js';
import {
  holdUnstored,
  type RefreshResult,
  type ResultWriter,
  writeResults,
  writeResultsChained,
  writeUntilStored,
} from '../services/tokens.js';
import type { AuditChain } from './audit-chain.js';

/** How a group is written (the token service's; a test may wrap them). */
export interface Writers {
  writeResultsChained: typeof writeResultsChained;
  writeResults: typeof writeResults;
}

interface Pending {
  result: RefreshResult;
  resolve: (row: GrantRow | null) => void;
  reject: (error: unknown) => void;
}

/**
 * The sweep's refresh results, written together: the results that finish during one turn of the
 * event loop share one statement with their audit records, chained after the head this daemon wrote
 * last (each grant still version-checked), so a group costs one round trip and the audit head is
 * never held across one. When that cannot be (someone else wrote to the audit log, a grant lost its
 * lease), the group shares one transaction with the head locked. Should that fail, its results are
 * written one by one, so one bad row never costs the others their rotated refresh tokens; a result
 * found already stored (the group's statement committed and its answer was lost with the connection)
 * was written with its audit record, and is not written, or recorded as lost, again.
 */
export class RefreshBatcher {
  readonly #ctx: ServiceContext;
  readonly #chain: AuditChain;
  #queue: Pending[] = [];
  #scheduled = false;
  #inFlight = 0;
  readonly #writers: Writers;
  /** How long an answer is kept and tried while the database cannot be reached (see writeUntilStored). */
  readonly #patienceMs: number;

  constructor(
    ctx: ServiceContext,
    chain: AuditChain,
    writers: Writers = { writeResultsChained, writeResults },
    patienceMs = 10 * 60_000,
  ) {
    this.#ctx = ctx;
    this.#chain = chain;
    this.#writers = writers;
    this.#patienceMs = patienceMs;
  }

  readonly write: ResultWriter = (result) => {
    // Held from here until written: a sweep of this daemon that claims the grant again meanwhile
    // (its lease lapsed while the database was down) sends nothing.
    const release = holdUnstored(result.grant.id);
    return new Promise<GrantRow | null>((resolve, reject) => {
      this.#queue.push({ result, resolve, reject });
      this.#schedule();
    }).finally(release);
  };

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

  /** The results in one transaction with the audit head locked, and the head they leave. */
  async #locked(results: RefreshResult[]) {
    const { rows, head } = await this.#ctx.transaction((tx) =>
      this.#writers.writeResults(this.#ctx, tx, results),
    );
    return { head, value: rows };
  }

  async #flush(batch: Pending[]): Promise<void> {
    const results = batch.map((p) => p.result);
    try {
      // One statement after the head this daemon wrote last; else a transaction that locks it.
      const rows = await this.#chain.write<Array<GrantRow | null>>(
        () => this.#locked(results),
        async (known) => {
          const fast = await this.#writers.writeResultsChained(this.#ctx, results, known);
          return fast && { head: fast.head, value: fast.rows };
        },
      );
      for (const [i, p] of batch.entries()) p.resolve(rows[i] ?? null);
    } catch {
      // One by one, each kept trying while the database cannot be reached (a restart, a failover):
      // the answers, rotated refresh tokens among them, exist only here until written.
      await Promise.all(
        batch.map(async (p) => {
          try {
            // A sealed token is unique (a fresh nonce each time): finding this one stored means it was
            // written, with its audit record, by the statement whose answer was lost.
            const stored = await tokenStore.get(this.#ctx.db, p.result.grant.id).catch(() => null);
            if (stored && stored.accessTokenEnc === p.result.tokens.accessTokenEnc) return p.resolve(stored);
            const row = await writeUntilStored(
              this.#ctx,
              p.result,
              async () => (await this.#chain.write(() => this.#locked([p.result])))[0] ?? null,
              this.#patienceMs,
            );
            p.resolve(row);
          } catch (error) {
            p.reject(error);
          }
        }),
      );
    }
  }
}
