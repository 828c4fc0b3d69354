import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import type { Options as PostgresOptions, PostgresType } from 'postgres';
import { databaseFailure, errorMessage } from './errors.js';

type Sql = import('postgres').Sql<Record<string, PostgresType>>;
type Options = PostgresOptions<Record<string, PostgresType>>;

/**
 * A LISTEN on a PostgreSQL server that knows whether it is in place, for a cache that may serve only
 * while every change is notified to it. postgres.js's own `listen()` does not say when its connection
 * closes, tries again on a backoff of its own (it grew to 4-18 s after a restart of the server), and
 * cannot see a partition, which closes nothing (unseen for as long as TCP takes). So the listener
 * owns one connection (and its socket) and:
 * - says it no longer listens as soon as that connection closes, or a LISTEN or a heartbeat fails;
 * - sends itself a notification every HEARTBEAT_MS on a channel of its own, and says it no longer
 *   listens when the echo is not back within ECHO_MS (the connection may merely be slow: a late echo
 *   makes it listen again, since nothing was lost on a connection that stayed open);
 * - drops a connection that has answered nothing for SILENT_MS, and opens another RETRY_MS after a
 *   connection dropped or failed, for as long as it runs.
 * It listens (again) once the echo of a heartbeat is back: notifications come in the order their
 * transactions committed, so every change committed after the LISTEN took effect and before the
 * heartbeat was sent has been delivered by then, and every later one will be, while it listens.
 */

/** How often the listener notifies itself while the last echo is back. */
const HEARTBEAT_MS = 2_000;
/** How long an echo may take before the listener no longer counts itself listening. */
const ECHO_MS = 1_500;
/** How long a connection may answer nothing (its LISTEN, or an echo) before it is dropped. */
const SILENT_MS = 5_000;
/** How soon another connection is opened once one dropped or failed. */
export const RETRY_MS = 1_000;
/** How often the listener looks at its connection. */
const TICK_MS = 250;

export interface ListenHandlers {
  /** A notification on the channel. */
  onPayload(payload: string): void;
  /**
   * The LISTEN is in place (again): every change committed since it took effect is delivered (those
   * committed before, while it was not in place, were notified to no one).
   */
  onListening(): void;
  /** No longer listening (or the first attempts failed): changes from now on may be missed. */
  onLost(reason: string): void;
}

export interface ChangeListener {
  /** True while the LISTEN is in place and its last heartbeat came back in time. */
  readonly listening: boolean;
  /**
   * How many times listening was lost: unchanged across some work means the LISTEN stayed in place
   * through it (nothing was missed).
   */
  readonly losses: number;
  close(): Promise<void>;
}

/** One connection: from its LISTEN to its drop. */
interface Attempt {
  sql: Sql | null;
  socket: Socket | null;
  /** The LISTEN statements answered. */
  ready: boolean;
  startedAt: number;
  /** The heartbeat not yet echoed: its number and when it was sent. */
  pending: { n: number; at: number } | null;
  sentAt: number;
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

function why(error: unknown): string {
  const what = databaseFailure(error);
  return what ? `${what} (${errorMessage(error)})` : errorMessage(error);
}

/**
 * The socket postgres.js would open itself, opened here so that a connection whose answers stopped
 * can be destroyed (postgres.js's end() waits for the server's goodbye, which a partition never
 * brings). Over the hosts of a multi-host URL in turn, one per attempt.
 */
function openSocket(
  options: { host: string[]; port: number[]; path?: string | false },
  turn: number,
): Socket {
  if (options.path) return createConnection(options.path);
  const i = turn % options.host.length;
  const host = options.host[i]!;
  const port = options.port[i] ?? options.port[0]!;
  const socket = createConnection(port, host);
  // What postgres.js sets on a socket it opens (its errors name them).
  Object.assign(socket, { host, port });
  return socket;
}

export class PostgresListener implements ChangeListener {
  readonly #open: (overrides: Partial<Options>) => Sql;
  readonly #channel: string;
  /** This listener's own channel, for its heartbeats (no other process hears them). */
  readonly #echo = `credvault_echo_${randomBytes(8).toString('hex')}`;
  readonly #handlers: ListenHandlers;
  readonly #timer: NodeJS.Timeout;
  #attempt: Attempt | null = null;
  #retryAt = 0;
  #turn = 0;
  #beats = 0;
  #listening = false;
  /** A loss was reported and listening has not come back since (one report per outage). */
  #reported = false;
  #losses = 0;
  #closed = false;

  /** `open`: a postgres.js client for the database, with these options over its own. */
  constructor(open: (overrides: Partial<Options>) => Sql, channel: string, handlers: ListenHandlers) {
    this.#open = open;
    this.#channel = channel;
    this.#handlers = handlers;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
    this.#tick();
  }

  get listening(): boolean {
    return this.#listening;
  }

  get losses(): number {
    return this.#losses;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    const attempt = this.#attempt;
    this.#attempt = null;
    this.#listening = false;
    if (!attempt) return;
    attempt.socket?.destroy();
    await attempt.sql?.end({ timeout: 0 }).catch(() => {});
  }

  #tick(): void {
    if (this.#closed) return;
    const now = performance.now();
    const attempt = this.#attempt;
    if (!attempt) {
      if (now >= this.#retryAt) this.#connect(now);
    } else if (!attempt.ready) {
      if (now - attempt.startedAt > SILENT_MS)
        this.#drop(attempt, `its LISTEN was not answered within ${SILENT_MS / 1000} s`);
    } else if (attempt.pending) {
      const waited = now - attempt.pending.at;
      if (waited > SILENT_MS) this.#drop(attempt, `the database did not answer for ${SILENT_MS / 1000} s`);
      else if (waited > ECHO_MS) this.#lost(`its heartbeat did not come back within ${ECHO_MS / 1000} s`);
    } else if (now - attempt.sentAt >= HEARTBEAT_MS) {
      this.#beat(attempt, now);
    }
  }

  #connect(now: number): void {
    const attempt: Attempt = {
      sql: null,
      socket: null,
      ready: false,
      startedAt: now,
      pending: null,
      sentAt: 0,
    };
    const turn = this.#turn++;
    this.#attempt = attempt;
    const sql = this.#open({
      max: 1,
      idle_timeout: 0,
      max_lifetime: null,
      socket: (options: { host: string[]; port: number[]; path?: string | false }) => {
        attempt.socket = openSocket(options, turn);
        return attempt.socket;
      },
      onnotify: (channel: string, payload: string) => this.#notified(attempt, channel, payload),
      // After the failed statement's own error, which says more ("connection refused").
      onclose: () => setImmediate(() => this.#drop(attempt, 'its connection closed')),
    } as Partial<Options>);
    attempt.sql = sql;
    sql
      .unsafe(`listen ${quote(this.#channel)}`)
      .then(() => sql.unsafe(`listen ${quote(this.#echo)}`))
      .then(
        () => {
          if (this.#attempt !== attempt) return;
          attempt.ready = true;
          this.#beat(attempt, performance.now());
        },
        (error: unknown) => this.#drop(attempt, `its LISTEN failed: ${why(error)}`),
      );
  }

  #beat(attempt: Attempt, now: number): void {
    const n = ++this.#beats;
    attempt.pending = { n, at: now };
    attempt.sentAt = now;
    attempt
      .sql!.unsafe('select pg_notify($1, $2)', [this.#echo, String(n)])
      .catch((error: unknown) => this.#drop(attempt, `its heartbeat failed: ${why(error)}`));
  }

  #notified(attempt: Attempt, channel: string, payload: string): void {
    if (this.#attempt !== attempt) return;
    if (channel === this.#channel) {
      this.#handlers.onPayload(payload);
      return;
    }
    if (channel !== this.#echo) return;
    if (attempt.pending && Number(payload) >= attempt.pending.n) attempt.pending = null;
    if (!this.#listening) {
      this.#listening = true;
      this.#reported = false;
      this.#handlers.onListening();
    }
  }

  /** Ends a connection (its LISTEN with it); another is opened RETRY_MS later. */
  #drop(attempt: Attempt, reason: string): void {
    if (this.#attempt !== attempt) return;
    this.#attempt = null;
    this.#retryAt = performance.now() + RETRY_MS;
    attempt.socket?.destroy();
    void attempt.sql?.end({ timeout: 0 }).catch(() => {});
    this.#lost(reason);
  }

  #lost(reason: string): void {
    if (this.#closed) return;
    const was = this.#listening;
    this.#listening = false;
    if (was) this.#losses += 1;
    if (was || !this.#reported) {
      this.#reported = true;
      this.#handlers.onLost(reason);
    }
  }
}
