import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { VERSION } from '../version.js';

/**
 * The daemon's Prometheus metrics, on their own registry (nothing global). Labels take a bounded set
 * of values only (platforms, statuses, outcomes, route names): never a connection, grant or client.
 */
export class DaemonMetrics {
  readonly registry = new Registry();

  constructor() {
    // The process's own (the standard names: process_resident_memory_bytes, process_open_fds,
    // nodejs_eventloop_lag_seconds, nodejs_heap_size_used_bytes …), as any Node.js dashboard reads them.
    collectDefaultMetrics({ register: this.registry });
    this.buildInfo.set({ version: VERSION }, 1);
  }

  readonly buildInfo = new Gauge({
    name: 'credvault_build_info',
    help: 'Always 1; the version of credvault this daemon runs as a label.',
    labelNames: ['version'] as const,
    registers: [this.registry],
  });
  readonly refreshes = new Counter({
    name: 'credvault_refreshes_total',
    help: 'Token refreshes made by the sweep, by platform and outcome (success, dead_grant, transient, rate_limited, client, internal, lease_lost, …).',
    labelNames: ['platform', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly requests = new Histogram({
    name: 'credvault_http_request_duration_seconds',
    help: 'Latency of the daemon’s HTTP requests (every route: token, connections, metrics, healthz, the admin API …), by route and status, failed ones included.',
    labelNames: ['route', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly auditBatch = new Histogram({
    name: 'credvault_audit_batch_size',
    help: 'Audit records written per batch by the daemon’s HTTP endpoint (tokens served, refusals, admin API calls).',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
    registers: [this.registry],
  });
  readonly auditFailures = new Counter({
    name: 'credvault_audit_write_failures_total',
    help: 'Audit records of the HTTP endpoint that could not be written; a token or admin answer whose record fails is refused (503).',
    registers: [this.registry],
  });
  readonly sweeps = new Counter({
    name: 'credvault_sweeps_total',
    help: 'Refresh sweeps completed.',
    registers: [this.registry],
  });
  readonly sweepFailures = new Counter({
    name: 'credvault_sweep_failures_total',
    help: 'Refresh sweeps that failed (the database unreachable, say); the next one starts within 10 s.',
    registers: [this.registry],
  });
  readonly listening = new Gauge({
    name: 'credvault_listening',
    help: '1 while the daemon serves tokens and clients from memory, knowing every change reaches it (PostgreSQL LISTEN in place, its heartbeat answered; always on the embedded database); 0 while it reads them from the database at every request.',
    registers: [this.registry],
  });
  readonly lastSweep = new Gauge({
    name: 'credvault_sweep_last_success_timestamp_seconds',
    help: 'Unix time the last refresh sweep completed (0: none yet).',
    registers: [this.registry],
  });

  // The gauges below are read from the database every 15 s. While it cannot be read they keep their
  // last values, and credvault_database_gauges_updated_timestamp_seconds says how old those are.
  readonly gaugesUpdated = new Gauge({
    name: 'credvault_database_gauges_updated_timestamp_seconds',
    help: 'Unix time credvault_connections, credvault_refresh_tokens_ending_soon and the earliest expiry were last read from the database (0: not yet); they keep their last values while it cannot be read.',
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: 'credvault_connections',
    help: 'Connections by platform and status.',
    labelNames: ['platform', 'status'] as const,
    registers: [this.registry],
  });
  /** When the earliest access token in use expires, as last read (null: none in use; undefined: not read yet). */
  earliestExpiryAt: Date | null | undefined;
  readonly earliestExpiry: Gauge = new Gauge({
    name: 'credvault_earliest_access_token_expiry_seconds',
    help: 'Seconds until the earliest access token of a connection in use (active or in error) expires, counted at the scrape (negative: already expired; NaN: none in use, or not read yet).',
    registers: [this.registry],
    // Counted now from the expiry as read, so that it keeps counting down while the database cannot
    // be read (the tokens the daemon holds expire all the same).
    collect: () => {
      const at = this.earliestExpiryAt;
      this.earliestExpiry.set(at ? (at.getTime() - Date.now()) / 1000 : Number.NaN);
    },
  });
  readonly refreshTokenEnding = new Gauge({
    name: 'credvault_refresh_tokens_ending_soon',
    help: 'Connections whose refresh token has a fixed end within 14 days (LinkedIn) or will idle out, by platform.',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
}
