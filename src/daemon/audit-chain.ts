import type { AuditHead } from '../services/audit.js';

/**
 * The audit chain's head as this daemon last wrote it, shared by its two writers (the token
 * endpoint's audit batches and the sweep's refresh writes). Their statements append after this head
 * only if it is still the database's, so they take turns here: two at once from the same head
 * would make one of them fail and take the long way (a transaction with the head locked). Null when
 * unknown (at start, after a failure): the next write locks and reads it.
 */
export class AuditChain {
  head: AuditHead | null = null;
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `write` after the writes queued before it have finished. */
  inTurn<T>(write: () => Promise<T>): Promise<T> {
    const turn = this.#tail.then(write, write);
    this.#tail = turn.catch(() => {});
    return turn;
  }
}
