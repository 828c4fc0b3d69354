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

  /**
   * Writes in turn after the writes queued before it: `chained` appends after the known head in one
   * statement (null when it cannot: another writer moved the head, say), else `locked` writes in a
   * transaction that locks and reads the head. Keeps the head the write leaves; forgets it when the
   * write fails (the statement may or may not have committed).
   */
  write<T>(
    locked: () => Promise<{ head: AuditHead | null; value: T }>,
    chained?: (known: AuditHead) => Promise<{ head: AuditHead; value: T } | null>,
  ): Promise<T> {
    const write = async () => {
      try {
        const known = this.head;
        const fast = known && chained ? await chained(known) : null;
        if (fast) {
          this.head = fast.head;
          return fast.value;
        }
        this.head = null;
        const slow = await locked();
        this.head = slow.head;
        return slow.value;
      } catch (error) {
        this.head = null;
        throw error;
      }
    };
    const turn = this.#tail.then(write, write);
    this.#tail = turn.catch(() => {});
    return turn;
  }
}
