import { databaseFailure, errorMessage } from '../db/errors.js';
import type { ConnectionRow } from '../db/store/connections.js';
import type { GrantRow } from '../db/store/tokens.js';
import { ERROR_THRESHOLD, type RecordedFailure, type RefreshOutcome } from '../services/tokens.js';
import { redact } from '../util/redact.js';
import { connectionRef } from '../views.js';
import { type Logger, RepeatedLines } from './log.js';

/**
 * What the sweep's refreshes and the sweep itself write to the daemon's log: one line per event, its
 * facts as fields an operator can search and alert on, and a message that says what happened and what
 * to do.
 *
 * - `refresh_failed` (warn; error for credvault's own failures): a refresh failed and the connection
 *   keeps its status. Fields: the connections (`connections`: refs that `credvault connections show`
 *   accepts, and `connection_ids`), `platform`, `app`, `outcome` (the kind of failure, as in
 *   credvault_refreshes_total), `reason` (what `credvault status` shows), `http_status`,
 *   `platform_code`, `consecutive_failures`, `status`, `next_attempt_after` (the end of its cool-down),
 *   `action`, and `grant`.
 * - `connection_error` (error): this failure was the third in a row, and the connections are now in
 *   `error`; logged once, by the process that made it so.
 * - `needs_reauth` (error): the platform refused the refresh token; the connections need a person, and
 *   `action` is the `credvault connect …` that connects them again. Logged once: the sweep does not
 *   try them again.
 * - `rate_limited` (warn): the platform answered 429; its refreshes pause.
 * - `recovered` (info): a refresh worked for connections that had failed (in `error`, or failing).
 * - `sweep_failed` (error), `sweep_recovered` (info): the sweep itself failed (the database
 *   unreachable, say), repeats counted rather than logged each time; and works again.
 *
 * Every line goes through the log's redaction, fields included.
 */

/** Connections named in a line at most (a consent may reach hundreds of accounts). */
const MAX_NAMED = 10;

/** A UTC time to the second, for a message. */
function at(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

export class RefreshLog {
  readonly #log: Logger;
  /** The connections of grants whose last refresh failed (as that failure read them), to name at recovery. */
  readonly #failing = new Map<string, ConnectionRow[]>();
  readonly #sweepRepeats: RepeatedLines;
  #sweepFailingSince: Date | null = null;
  #failedSweeps = 0;

  constructor(log: Logger) {
    this.#log = log;
    // A failing sweep is tried again within 10 s: counted over a minute at least.
    this.#sweepRepeats = new RepeatedLines(log, { firstMs: 60_000 });
  }

  /**
   * After a refresh of `grant` by the sweep: `connection` is its first connection as read with the
   * claim, `failure` what a platform failure made of it, `internal` a failure of credvault's own,
   * `pauseMs` the pause a 429 brought on its platform.
   */
  refreshed(
    grant: Pick<GrantRow, 'id' | 'platform'>,
    connection: ConnectionRow | undefined,
    outcome: RefreshOutcome,
    {
      failure,
      internal,
      pauseMs,
    }: {
      failure?: RecordedFailure | null;
      internal?: { error: unknown; waits: boolean; until: Date | null } | null;
      pauseMs?: number | null;
    } = {},
  ): void {
    if (outcome === 'skipped') return;
    if (outcome === 'success') {
      this.#recovered(grant, connection);
      return;
    }
    const connections = failure?.connections.length
      ? failure.connections
      : (this.#failing.get(grant.id) ?? (connection ? [connection] : []));
    const who = this.#who(connections, grant);
    const base = {
      grant: grant.id,
      platform: grant.platform,
      ...this.#refs(connections),
      outcome,
    };
    if (outcome === 'internal') {
      const error = redact(errorMessage(internal?.error));
      const database = databaseFailure(internal?.error);
      const waits = internal?.waits ?? false;
      this.#log.error(
        `refresh of ${who} failed for credvault's own reason${database ? ` (${database})` : ''}: ${error}; ${
          waits
            ? `the grant waits before it is tried again (after ${at(internal!.until!)}); nothing was lost at the platform`
            : 'it is tried again at the next sweep'
        }`,
        {
          event: 'refresh_failed',
          ...base,
          reason: error,
          next_attempt_after: waits ? internal!.until!.toISOString() : null,
          action: database
            ? 'check the database'
            : 'see the reason; credvault doctor checks the key and the database',
        },
      );
      return;
    }
    if (outcome === 'lease_lost') {
      this.#log.warn(
        `the answer of the refresh of ${who} was not stored: another refresher took the grant over after this one's lease ended (it holds the newer token); nothing to do`,
        { event: 'refresh_superseded', ...base },
      );
      return;
    }
    if (!failure) {
      // A platform's failure that was not recorded (its record could not be written): what is known.
      this.#log.warn(`refresh of ${who} failed: ${outcome}`, { event: 'refresh_failed', ...base });
      return;
    }
    const facts = {
      ...base,
      ...(failure.appLabel ? { app: failure.appLabel } : {}),
      reason: failure.message,
      http_status: failure.httpStatus,
      platform_code: failure.platformCode,
      consecutive_failures: failure.consecutiveFailures,
      status: failure.status,
      next_attempt_after: failure.retryAfter?.toISOString() ?? null,
    };
    if (!failure.recorded) {
      this.#log.info(
        `refresh of ${who} failed (${failure.message}), but another process refreshed it meanwhile: the failure was not recorded; nothing to do`,
        { event: 'refresh_failed', ...facts, consecutive_failures: null, status: null },
      );
      return;
    }
    this.#failing.set(grant.id, connections);
    const before = connections[0]?.status ?? 'active';
    const reconnect = this.#reconnect(grant.platform, failure.appLabel, connections);
    const firstRef = connections[0] ? connectionRef(connections[0]) : grant.id;
    if (failure.status === 'needs_reauth') {
      if (before !== 'needs_reauth') {
        this.#failing.delete(grant.id);
        this.#log.error(
          `${who} needs a person: the platform refused its refresh token (${failure.message}). The daemon no longer refreshes it and it is not served; connect it again: ${reconnect}`,
          { event: 'needs_reauth', ...facts, previous_status: before, action: reconnect },
        );
        return;
      }
    }
    const next = failure.retryAfter ? `it is tried again after ${at(failure.retryAfter)}` : '';
    // A 429 pauses the platform's refreshes (whatever else this failure did).
    const paused =
      outcome === 'rate_limited'
        ? {
            text: `${grant.platform} is rate limiting refreshes; pausing it for ${Math.round((pauseMs ?? 0) / 1000)} s`,
            until: new Date(Date.now() + (pauseMs ?? 0)).toISOString(),
          }
        : null;
    if (failure.status === 'error' && before !== 'error') {
      // The app's own credentials refused (a secret rotated at the platform): connecting again would
      // fail on the same secret; the app is what to fix.
      const action =
        outcome === 'client'
          ? `credvault apps update ${failure.appLabel ?? 'APP'} --new-client-secret (the platform refused the app itself), then credvault connections refresh ${firstRef} --force`
          : `credvault connections refresh ${firstRef} --force (to try at once); if the platform refuses it: ${reconnect}`;
      this.#log.error(
        `${paused ? `${paused.text}. ` : ''}${who} is now in error: ${failure.consecutiveFailures} refreshes failed in a row (last: ${failure.message}); tokens are no longer served for it. ${next ? `The daemon keeps trying: ${next}. ` : ''}Once the cause is fixed: ${action}`,
        {
          event: 'connection_error',
          ...facts,
          previous_status: before,
          ...(paused ? { paused_until: paused.until } : {}),
          action,
        },
      );
      return;
    }
    if (paused) {
      this.#log.warn(
        `${paused.text} (refresh of ${who}: ${failure.consecutiveFailures} failed in a row, ${next || 'tried again later'}); nothing to do unless it lasts`,
        {
          event: 'rate_limited',
          ...facts,
          paused_until: paused.until,
          action: 'none (the daemon waits as the platform asks)',
        },
      );
      return;
    }
    const action =
      outcome === 'client'
        ? `the platform refused the app${failure.appLabel ? ` ${failure.appLabel}` : ''} itself: check its client id and secret (credvault apps show ${failure.appLabel ?? 'APP'}; credvault apps update ${failure.appLabel ?? 'APP'} --new-client-secret)`
        : failure.status === 'error'
          ? `credvault connections refresh ${firstRef} --force once the cause is fixed; if the platform refuses it: ${reconnect}`
          : outcome === 'transient'
            ? 'none unless it keeps failing (credvault status shows it)'
            : 'see the reason (credvault status shows it)';
    const count =
      failure.status === 'error'
        ? `${failure.consecutiveFailures} in a row; in error`
        : `${failure.consecutiveFailures} in a row; error at ${ERROR_THRESHOLD}`;
    this.#log.warn(
      `refresh of ${who} failed (${outcome}, ${count}): ${failure.message}${next ? `; ${next}` : ''}. To do: ${action}`,
      { event: 'refresh_failed', ...facts, action },
    );
  }

  /** A sweep failed: the first of a kind logged at once, the same again counted (RepeatedLines). */
  sweepFailed(error: unknown, message: string): void {
    this.#sweepFailingSince ??= new Date();
    this.#failedSweeps += 1;
    const database = databaseFailure(error);
    // One kind per cause: the database's refusing connections after it reset them is one outage.
    this.#sweepRepeats.log(
      'error',
      database ?? message,
      `refresh sweep failed${database ? `: ${database}` : ''}; no token is refreshed until it works (tried again within 10 s; /healthz says so meanwhile)`,
      { event: 'sweep_failed', error: message },
    );
  }

  /** A sweep completed: after failures, says so once. */
  sweepWorked(): void {
    if (!this.#sweepFailingSince) return;
    this.#sweepRepeats.flush();
    this.#log.info(
      `refresh sweep works again (${this.#failedSweeps} failed since ${at(this.#sweepFailingSince)})`,
      {
        event: 'sweep_recovered',
        failed_sweeps: this.#failedSweeps,
        failing_since: this.#sweepFailingSince.toISOString(),
      },
    );
    this.#sweepFailingSince = null;
    this.#failedSweeps = 0;
  }

  #recovered(grant: Pick<GrantRow, 'id' | 'platform'>, connection: ConnectionRow | undefined): void {
    const connections = this.#failing.get(grant.id) ?? (connection ? [connection] : []);
    this.#failing.delete(grant.id);
    if (!connection || (connection.status === 'active' && connection.consecutiveFailures === 0)) return;
    const who = this.#who(connections, grant);
    const was =
      connection.status === 'active'
        ? `after ${connection.consecutiveFailures} failed refresh${connection.consecutiveFailures === 1 ? '' : 'es'}`
        : `it was in ${connection.status} after ${connection.consecutiveFailures} failed refreshes; active again`;
    this.#log.info(`refresh of ${who} works again (${was})`, {
      event: 'recovered',
      grant: grant.id,
      platform: grant.platform,
      ...this.#refs(connections),
      outcome: 'success',
      previous_status: connection.status,
      previous_failures: connection.consecutiveFailures,
      status: 'active',
    });
  }

  /** `connection acme-us (microsoft_ads)`, `connections a, b and 3 more (microsoft_ads)`. */
  #who(connections: ConnectionRow[], grant: Pick<GrantRow, 'id' | 'platform'>): string {
    if (!connections.length) return `grant ${grant.id} (${grant.platform}, no connection)`;
    const names = connections.slice(0, 3).map(connectionRef);
    const more = connections.length - names.length;
    const list = more > 0 ? `${names.join(', ')} and ${more} more` : names.join(', ');
    return `${connections.length === 1 ? 'connection' : 'connections'} ${list} (${grant.platform})`;
  }

  #refs(connections: ConnectionRow[]) {
    const named = connections.slice(0, MAX_NAMED);
    return {
      connections: named.map(connectionRef),
      connection_ids: named.map((c) => c.id),
      ...(connections.length > named.length ? { more_connections: connections.length - named.length } : {}),
    };
  }

  /** The command that connects these accounts again (as `credvault status` advises it). */
  #reconnect(platform: string, app: string | null, connections: ConnectionRow[]): string {
    const accounts = connections
      .slice(0, MAX_NAMED)
      .map((c) => ` --account ${c.externalAccountId}`)
      .join('');
    return `credvault connect ${platform} --app ${app ?? 'APP'}${accounts}`;
  }
}
