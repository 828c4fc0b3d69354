import { errorMessage } from '../db/errors.js';
import type { ConnectionRow } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import type { ClaimedGrant } from '../db/store/tokens.js';
import * as tokenStore from '../db/store/tokens.js';
import { PLATFORM_IDS, PLATFORMS } from '../providers/catalog.js';
import type { ServiceContext } from '../services/context.js';
import {
  leaseMs,
  type RecordedFailure,
  type RefreshOutcome,
  refreshClaimed,
  refreshOwner,
  unstoredGrants,
} from '../services/tokens.js';
import { sleep } from '../util/backoff.js';
import { redact } from '../util/redact.js';
import type { AuditChain } from './audit-chain.js';
import type { Logger } from './log.js';
import type { DaemonMetrics } from './metrics.js';
import type { DaemonOptions } from './options.js';
import { RefreshBatcher } from './refresh-batcher.js';
import { RefreshLog } from './refresh-log.js';

/**
 * The refresh loop. Each sweep claims due grants a round ahead (one statement claims up to twice the
 * concurrency, with FOR UPDATE SKIP LOCKED and a lease, so several daemons share the work without a
 * leader; their data keys and connections come with the claim) and refreshes them through the token
 * service as slots free up, while the next claim runs. A slot is one platform call: it is free again
 * once the platform has answered, while the answer is written (grouped with others by the
 * RefreshBatcher), so the database's round trip does not idle the platform's concurrency; at most as
 * many again wait for their write. Between sweeps it sleeps until the earliest upcoming
 * expiry enters the window, never longer than --interval. A platform that answers 429 is paused for
 * the time it asked for; failing grants cool down (the token service records that).
 */

/** How often a grant that nobody uses is still refreshed, so an idle refresh token is not dropped. */
export function keepAliveDays(): Record<string, number> {
  const days: Record<string, number> = {};
  for (const id of PLATFORM_IDS) {
    const idle = PLATFORMS[id].capabilities.refresh_token_idle_days;
    if (idle) days[id] = Math.max(1, Math.floor(idle / 3));
  }
  return days;
}

/**
 * The longest the loop may go without progress while it sweeps: a refresh's lease (a platform call
 * with its retries ends within it) and a database statement's limit (the write of its answer, a claim),
 * beyond which nothing the sweep waits for should take. With no database limit (CREDVAULT_DB_TIMEOUT=0)
 * the lease alone.
 */
export function progressBoundMs(config: { httpTimeoutMs: number; dbTimeoutMs: number }): number {
  const db = config.dbTimeoutMs;
  return leaseMs(config.httpTimeoutMs) + (db > 0 ? db + Math.min(5000, db) : 0);
}

/** The longest a platform's 429 pauses its refreshes. */
const RATE_LIMIT_PAUSE_MAX_MS = 3_600_000;

/** A claimed grant waiting for a slot. */
interface Ready {
  claimed: ClaimedGrant;
  connection: ConnectionRow | undefined;
  claimedAt: number;
  /** Its data key is primed and its connection read: it can be sent. */
  loaded: boolean;
}

export class RefreshScheduler {
  readonly #ctx: ServiceContext;
  readonly #options: DaemonOptions;
  readonly #metrics: DaemonMetrics;
  readonly #log: Logger;
  readonly #owner = refreshOwner('daemon');
  readonly #stop = new AbortController();
  readonly #stopped = new Promise<void>((resolve) =>
    this.#stop.signal.addEventListener('abort', () => resolve(), { once: true }),
  );
  #wake: AbortController = new AbortController();
  /** Refreshes started and not finished (their answers may be waiting to be written). */
  readonly #inFlight = new Set<Promise<void>>();
  /** What each of those refreshes, for a shutdown that has to leave them: `grant ID (platform, connection)`. */
  readonly #refreshing = new Map<Promise<void>, { grantId: string; label: string }>();
  /** Of those, the ones still waiting for the platform: the slots in use. */
  #calling = 0;
  /** Wakes the sweep when a slot frees or a refresh finishes. */
  #changed: (() => void) | null = null;
  readonly #pausedUntil = new Map<string, number>();
  readonly #writer: RefreshBatcher;
  /** What the refreshes and the sweep write to the log (see RefreshLog). */
  readonly #events: RefreshLog;
  #loop: Promise<void> | null = null;
  lastSweepAt: Date | null = null;
  lastError: string | null = null;
  /**
   * When the loop started, when the sweep under way did (null between sweeps), and the last sign of
   * progress: a sweep started or ended, a claim answered, a platform answered, a refresh finished.
   */
  #startedAt: number | null = null;
  #sweepingSince: number | null = null;
  #progressAt = Date.now();
  /** Since when the loop has been reported stalled (checkStall), or null. */
  #stalledSince: number | null = null;

  constructor(
    ctx: ServiceContext,
    options: DaemonOptions,
    metrics: DaemonMetrics,
    log: Logger,
    chain: AuditChain,
  ) {
    this.#ctx = ctx;
    this.#options = options;
    this.#metrics = metrics;
    this.#log = log;
    this.#writer = new RefreshBatcher(ctx, chain);
    this.#events = new RefreshLog(log);
  }

  start(): void {
    this.#startedAt ??= Date.now();
    this.#loop ??= this.#run();
  }

  /**
   * Why the refresh loop is stalled, or null: a sweep under way that has made no progress for longer
   * than anything it waits for may take (progressBoundMs), or, between sweeps, no sweep completed for
   * twice --interval and that bound (the sweeps keep failing, or the loop stopped turning).
   */
  stalled(now = Date.now()): string | null {
    const bound = progressBoundMs(this.#ctx.config);
    if (this.#sweepingSince !== null) {
      const quiet = now - this.#progressAt;
      if (quiet <= bound) return null;
      return `sweep stalled: no progress for ${Math.round(quiet / 1000)} s (sweeping since ${new Date(this.#sweepingSince).toISOString()})`;
    }
    if (this.#startedAt === null || this.#stop.signal.aborted) return null;
    const since = this.lastSweepAt?.getTime() ?? this.#startedAt;
    if (now - since <= 2 * this.#options.intervalMs + bound) return null;
    return `sweep stalled: none completed ${this.lastSweepAt ? `since ${this.lastSweepAt.toISOString()}` : 'since the daemon started'} (${Math.round((now - since) / 1000)} s)`;
  }

  /** A sweep under way that has stopped making progress: what the systemd watchdog is withheld for. */
  stuck(now = Date.now()): boolean {
    return this.#sweepingSince !== null && now - this.#progressAt > progressBoundMs(this.#ctx.config);
  }

  /** Logs when the loop becomes stalled (a warning, with the reason) and when it goes on again. */
  checkStall(now = Date.now()): void {
    const reason = this.stalled(now);
    if (reason && this.#stalledSince === null) {
      this.#stalledSince = now;
      this.#log.warn(`refresh ${reason}`, { event: 'sweep_stalled' });
    } else if (!reason && this.#stalledSince !== null) {
      const seconds = Math.round((now - this.#stalledSince) / 1000);
      this.#log.info(`refresh sweep progressing again after ${seconds} s stalled`, {
        event: 'sweep_progressing',
        stalled_seconds: seconds,
      });
      this.#stalledSince = null;
    }
  }

  #progress(): void {
    this.#progressAt = Date.now();
  }

  /** Sweeps now instead of waiting (SIGHUP, tests). */
  poke(): void {
    this.#wake.abort();
  }

  /** Takes no new work; refreshes already sent finish and are stored. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#wake.abort();
    await this.#loop;
    await Promise.allSettled([...this.#inFlight]);
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** The refreshes started and not finished: `grant ID (platform, connection)` each. */
  unfinished(): Array<{ grantId: string; label: string }> {
    return [...this.#refreshing.values()];
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      let delay = this.#options.intervalMs;
      this.#sweepingSince = Date.now();
      this.#progress();
      try {
        await this.#sweep();
        delay = await this.#untilNextDue();
        this.lastError = null;
        this.#events.sweepWorked();
      } catch (error) {
        // Shown by /healthz, which needs no token: scrubbed like a log line.
        this.lastError = redact(errorMessage(error));
        this.#metrics.sweepFailures.inc();
        this.#events.sweepFailed(error, this.lastError);
        delay = Math.min(delay, 10_000);
      } finally {
        this.#sweepingSince = null;
        this.#progress();
      }
      if (this.#stop.signal.aborted) break;
      this.#wake = new AbortController();
      // A timer holds at most 2^31-1 ms (24.8 days; a longer one fires at once): longer waits are
      // taken in turns.
      await sleep(Math.min(delay, 2 ** 31 - 1), AbortSignal.any([this.#stop.signal, this.#wake.signal]));
    }
  }

  /** Refreshes everything due now; returns how many refreshes were attempted. */
  async #sweep(): Promise<number> {
    const lease = leaseMs(this.#ctx.config.httpTimeoutMs);
    const idle = keepAliveDays();
    const { concurrency } = this.#options;
    const ready: Ready[] = [];
    let attempted = 0;
    let exhausted = false;
    // One claim at a time runs beside the refreshes: slots that free meanwhile are filled from the
    // claims in hand instead of waiting for its round trips (about 5 ms under load, a quarter of a
    // 20 ms platform call; a slot waited 1 ms on average before, 0.2 ms now). A stop or a failure
    // waits for it, so that what it claimed is given back.
    let claiming: Promise<void> | null = null;
    let failed = null as { error: unknown } | null;
    try {
      while (!this.#stop.signal.aborted) {
        if (failed) throw failed.error;
        while (ready[0]?.loaded && this.#calling < concurrency && this.#inFlight.size < 2 * concurrency) {
          attempted += 1;
          this.#launch(ready.shift()!, lease);
        }
        // Claim the next round while this one runs, so a free slot never waits for a claim; once half
        // of the claims in hand are used up, not at every free slot (a claim of one grant costs the
        // database as much as a claim of sixteen).
        const wanted = 2 * concurrency - ready.length - this.#calling;
        if (!exhausted && !claiming && ready.length <= concurrency / 2 && wanted > 0) {
          claiming = this.#claimRound(lease, idle, wanted, ready)
            .then(
              (n) => {
                exhausted = n === 0;
              },
              (error: unknown) => {
                failed = { error };
              },
            )
            .finally(() => {
              claiming = null;
              this.#progress();
              this.#wakeSweep();
            });
          continue;
        }
        if (exhausted && !ready.length && !claiming) break;
        // A stop wakes this at once: the claims still waiting go back now, not after a slow refresh.
        await Promise.race([new Promise<void>((resolve) => (this.#changed = resolve)), this.#stopped]);
      }
    } finally {
      await claiming;
      // Claims never sent (the daemon is stopping) go back at once instead of waiting for the lease.
      await Promise.allSettled(
        ready.map((r) => tokenStore.unclaim(this.#ctx.db, r.claimed.grant, this.#owner)),
      );
    }
    await Promise.allSettled([...this.#inFlight]);
    this.lastSweepAt = new Date();
    this.#metrics.sweeps.inc();
    this.#metrics.lastSweep.set(this.lastSweepAt.getTime() / 1000);
    return attempted;
  }

  /**
   * Claims up to `wanted` due grants and queues them in `ready` (before anything else can fail, so
   * that the sweep gives them back should it stop); primes their data keys and reads their
   * connections. Resolves how many were claimed.
   */
  async #claimRound(
    lease: number,
    idle: Record<string, number>,
    wanted: number,
    ready: Ready[],
  ): Promise<number> {
    // The lease runs from before the claim was sent, by this host's clock (the database's may
    // differ, which the lease's margin covers).
    const claimedAt = Date.now();
    const claimed = await tokenStore.claimDue(
      this.#ctx.db,
      this.#owner,
      lease,
      this.#options.refreshWindowMs,
      idle,
      wanted,
      // A platform rate limiting this daemon keeps its grants where they are until the pause ends,
      // rather than claimed to wait in a slot that others' refreshes could use.
      [...this.#pausedUntil].filter(([, until]) => until > Date.now()).map(([platform]) => platform),
      unstoredGrants(),
    );
    const round: Ready[] = claimed.map((c) => ({
      claimed: c,
      connection: undefined,
      claimedAt,
      loaded: false,
    }));
    ready.push(...round);
    if (!claimed.length) return 0;
    (await this.#ctx.keyring()).prime(claimed.map((c) => c.dataKey));
    const connections = await connectionStore.firstByGrants(
      this.#ctx.db,
      claimed.map((c) => c.grant.id),
    );
    for (const entry of round) {
      entry.connection = connections.get(entry.claimed.grant.id);
      entry.loaded = true;
    }
    return claimed.length;
  }

  #wakeSweep(): void {
    const changed = this.#changed;
    this.#changed = null;
    changed?.();
  }

  #launch({ claimed: { grant }, connection, claimedAt }: Ready, lease: number): void {
    this.#calling += 1;
    let calling = true;
    const answered = () => {
      this.#progress();
      if (!calling) return;
      calling = false;
      this.#calling -= 1;
      this.#wakeSweep();
    };
    const job = (async () => {
      const paused = (this.#pausedUntil.get(grant.platform) ?? 0) > Date.now();
      let outcome: RefreshOutcome;
      let retryAfterMs: number | null = null;
      let failure: RecordedFailure | null = null;
      let internal: { error: unknown; waits: boolean; until: Date | null } | null = null;
      try {
        if (this.#stop.signal.aborted || paused) {
          // Its platform is rate limiting (since this claim was made), or the daemon is stopping: the
          // claim goes back unsent, and its slot to the others; claims skip the platform until the
          // pause ends.
          await tokenStore.unclaim(this.#ctx.db, grant, this.#owner);
          outcome = 'skipped';
        } else {
          // A claim that waited for a slot (or for a paused platform) has less of its lease left.
          outcome = await refreshClaimed(this.#ctx, grant, connection, this.#owner, {
            // The platform has answered: the slot is free while the answer is written.
            writer: (result) => {
              answered();
              if (Date.now() > claimedAt + lease) {
                // Still version-checked; but another refresher may have taken the grant over meanwhile.
                this.#log.warn(`the answer for grant ${grant.id} is written after its lease ended`);
              }
              return this.#writer.write(result);
            },
            leaseLeftMs: claimedAt + lease - Date.now(),
            stop: this.#stop.signal,
            onRateLimited: (seconds) => {
              retryAfterMs = seconds === null ? null : seconds * 1000;
            },
            onInternal: (error, waits, until) => {
              internal = { error, waits, until };
            },
            onFailure: (recorded) => {
              failure = recorded;
            },
          });
        }
      } catch (error) {
        outcome = 'internal';
        internal = { error, waits: false, until: null };
      }
      this.#metrics.refreshes.inc({ platform: grant.platform, outcome });
      let pauseMs: number | null = null;
      if (outcome === 'rate_limited') {
        // Per-platform pacing: the next claims for this platform wait as long as it asked (at least a
        // minute, at most an hour: a Retry-After of days would let the platform's tokens expire).
        pauseMs = Math.min(RATE_LIMIT_PAUSE_MAX_MS, Math.max(60_000, retryAfterMs ?? 0));
        const until = Math.max(this.#pausedUntil.get(grant.platform) ?? 0, Date.now() + pauseMs);
        this.#pausedUntil.set(grant.platform, until);
      }
      // One line per event, with what to do (see RefreshLog).
      this.#events.refreshed(grant, connection, outcome, { failure, internal, pauseMs });
    })();
    const tracked = job.finally(() => {
      this.#inFlight.delete(tracked);
      this.#refreshing.delete(tracked);
      answered();
      this.#wakeSweep();
    });
    this.#inFlight.add(tracked);
    const account =
      connection && (connection.name ?? `${connection.platform}:${connection.externalAccountId}`);
    this.#refreshing.set(tracked, {
      grantId: grant.id,
      label: `grant ${grant.id} (${grant.platform}${account ? `, ${account}` : ''})`,
    });
  }

  async #untilNextDue(): Promise<number> {
    const next = await tokenStore.nextDue(this.#ctx.db, this.#options.refreshWindowMs);
    if (!next) return this.#options.intervalMs;
    const due = next.getTime() - Date.now();
    // A little jitter so a fleet of daemons does not wake in lock step.
    const jitter = Math.random() * Math.min(5_000, Math.max(0, due) * 0.1);
    return Math.min(this.#options.intervalMs, Math.max(1_000, due + jitter));
  }
}
