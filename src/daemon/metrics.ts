import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The daemon's Prometheus metrics, on their own registry (nothing global). */
export class DaemonMetrics {
  readonly registry = new Registry();
  readonly refreshes = new Counter({
    name: 'credvault_refreshes_total',
    help: 'Token refreshes by platform and outcome (success, dead_grant, transient, rate_limited, client, …).',
    labelNames: ['platform', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: 'credvault_connections',
    help: 'Connections by platform and status.',
    labelNames: ['platform', 'status'] as const,
    registers: [this.registry],
  });
  readonly earliestExpiry = new Gauge({
    name: 'credvault_earliest_access_token_expiry_seconds',
    help: 'Seconds until the earliest access token of a connection in use (active or in error) expires (negative: already expired; NaN: none in use).',
    registers: [this.registry],
  });
  readonly requests = new Histogram({
    name: 'credvault_http_request_duration_seconds',
    help: 'Latency of the token endpoint by route and status.',
    labelNames: ['route', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly auditBatch = new Histogram({
    name: 'credvault_audit_batch_size',
    help: 'Audit records written per batch by the token endpoint.',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
    registers: [this.registry],
  });
  readonly sweeps = new Counter({
    name: 'credvault_sweeps_total',
    help: 'Refresh sweeps completed.',
    registers: [this.registry],
  });
  readonly refreshTokenEnding = new Gauge({
    name: 'credvault_refresh_tokens_ending_soon',
    help: 'Connections whose refresh token has a fixed end within 14 days (LinkedIn) or will idle out.',
    registers: [this.registry],
  });
}
