import { errorMessage } from '../db/errors.js';
import * as clientStore from '../db/store/clients.js';
import { type AuditEntry, appendAudit, recordAudit } from '../services/audit.js';
import type { ServiceContext } from '../services/context.js';
import { redact } from '../util/redact.js';
import type { AuditChain } from './audit-chain.js';
import type { DaemonMetrics } from './metrics.js';

/** Thrown to roll back /healthz's trial record. */
const ROLLED_BACK = Symbol('rolled back');

interface Pending {
  entry: AuditEntry;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Audit records of served tokens, written in batches: the requests that arrive while a batch is being
 * written make the next one, and each request is answered only after its batch committed (fail
 * closed). A failed batch fails every request in it. A batch is one statement, chained from the head
 * the previous batch left (appendAudit); only when another process wrote in between does it take
 * the locking path, so no request waits on a client round trip per request in series.
 */
export class AuditBatcher {
  readonly #ctx: ServiceContext;
  readonly #metrics: DaemonMetrics;
  readonly #maxBatch: number;
  #queue: Pending[] = [];
  #writing = false;
  #scheduled = false;
  #idle: Array<() => void> = [];
  /** When each client was last used since the last touchClients: the latest use, by id. */
  readonly #usedClients = new Map<string, Date>();
  /** The chain head as this daemon last wrote it, shared with the sweep's writes. */
  readonly #chain: AuditChain;
  /** Why the last batch was refused, until one is written or a trial write succeeds; else null. */
  #refused: string | null = null;
  /** Counts refused batches, so that a trial that began before one does not clear it. */
  #refusals = 0;
  #trial: Promise<string | null> | null = null;

  constructor(
    ctx: ServiceContext,
    metrics: DaemonMetrics,
    chain: AuditChain,
    options: { maxBatch?: number } = {},
  ) {
    this.#ctx = ctx;
    this.#chain = chain;
    this.#metrics = metrics;
    this.#maxBatch = options.maxBatch ?? 500;
  }

  /** A client token was used (any route): `clients list` shows when, written by touchClients. */
  used(clientId: string, at = new Date()): void {
    const before = this.#usedClients.get(clientId);
    if (!before || before < at) this.#usedClients.set(clientId, at);
  }

  write(entry: AuditEntry, clientId: string | null): Promise<void> {
    if (clientId) this.used(clientId);
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ entry, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing || !this.#queue.length) return;
    this.#scheduled = true;
    // Let the requests of this turn of the event loop join the batch.
    setImmediate(() => {
      this.#scheduled = false;
      this.#next();
      this.#whenIdle();
    });
  }

  /**
   * Sends what is queued as the next batch, unless one is being written: one batch at a time, each
   * one statement chained from the previous one's head; the requests that arrive meanwhile make the
   * next batch.
   */
  #next(): void {
    if (this.#writing || !this.#queue.length) return;
    const batch = this.#queue.splice(0, this.#maxBatch);
    this.#writing = true;
    void this.#flush(batch).then((failure) => {
      this.#writing = false;
      // The next batch leaves before this one's requests are answered: writing a few dozen answers
      // keeps the daemon busy for a while, time the database can spend on the next batch.
      this.#next();
      for (const p of batch) failure ? p.reject(failure.error) : p.resolve();
      this.#whenIdle();
    });
  }

  #whenIdle(): void {
    if (!this.#writing && !this.#scheduled && !this.#queue.length) {
      for (const done of this.#idle.splice(0)) done();
    }
  }

  /** Writes a batch; what went wrong, if anything (the caller answers the batch's requests). */
  async #flush(batch: Pending[]): Promise<{ error: unknown } | undefined> {
    try {
      const entries = batch.map((p) => p.entry);
      // One statement chained from the head this daemon wrote last; when someone else wrote since
      // (a CLI command, another daemon), the head is locked and read, and the chain continues from it.
      await this.#chain.write(
        async () => ({
          head: await this.#ctx.transaction((tx) => recordAudit(tx, this.#ctx.actor, entries)),
          value: undefined,
        }),
        async (known) => {
          const head = await appendAudit(this.#ctx.db, this.#ctx.actor, entries, known);
          return head && { head, value: undefined };
        },
      );
      this.#metrics.auditBatch.observe(batch.length);
      this.#refused = null;
      return undefined;
    } catch (error) {
      // Every request of the batch is refused (fail closed): credvault_audit_write_failures_total.
      this.#metrics.auditFailures.inc(batch.length);
      this.#refused = redact(errorMessage(error));
      this.#refusals++;
      return { error };
    }
  }

  /**
   * For /healthz: null while the audit log takes records, else why it refused the last batch (the
   * daemon serves no token it cannot record). After a refusal, each look tries a record in a
   * transaction that is rolled back (nothing is written, the chain does not move), so that a daemon
   * no request reaches any more (a load balancer took it out on the 503) sees the log mended too.
   */
  refusal(): Promise<string | null> {
    if (this.#refused === null) return Promise.resolve(null);
    this.#trial ??= this.#tryRecord().finally(() => {
      this.#trial = null;
    });
    return this.#trial;
  }

  async #tryRecord(): Promise<string | null> {
    const refusals = this.#refusals;
    try {
      await this.#ctx.transaction(async (tx) => {
        await recordAudit(tx, this.#ctx.actor, {
          action: 'daemon.health',
          targetType: 'daemon',
          outcome: 'success',
        });
        throw ROLLED_BACK;
      });
    } catch (error) {
      if (error !== ROLLED_BACK) return redact(errorMessage(error));
    }
    if (this.#refusals === refusals) this.#refused = null;
    return this.#refused;
  }

  /**
   * Records when clients were last seen, now and then rather than once per request: each one's last use
   * as it happened (not the time of this write), never after its revocation (see clientStore.touch).
   */
  async touchClients(): Promise<void> {
    if (!this.#usedClients.size) return;
    const uses = [...this.#usedClients].map(([id, at]) => ({ id, at }));
    this.#usedClients.clear();
    await clientStore.touch(this.#ctx.db, uses);
  }

  /** Waits for every queued record to be written (or refused). */
  drain(): Promise<void> {
    if (!this.#queue.length && !this.#writing && !this.#scheduled) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}
