/**
 * The JSON shapes of spec/cli.md, built from explicit field lists so that a new column never reaches
 * output by default. Shared by the CLI and the daemon.
 */
import type { TokenDocument } from './cli/fast-token.js';
import type { AppRecord } from './db/store/apps.js';
import type { AuditRow } from './db/store/audit.js';
import type { ConnectionView } from './db/store/connections.js';
import type { PlatformRow } from './db/store/platforms.js';

export function iso(value: Date | null | undefined): string | null {
  return value ? value.toISOString() : null;
}

export function appJson(app: AppRecord) {
  return {
    id: app.id,
    platform: app.platform,
    label: app.label,
    client_id: app.clientId,
    redirect_uri: app.redirectUri,
    scopes: app.scopes,
    login_customer_id: app.loginCustomerId,
    user_agent: app.userAgent,
    api_version: app.apiVersion,
    authorize_url: app.authorizeUrl,
    token_url: app.tokenUrl,
    revoke_url: app.revokeUrl,
    api_base_url: app.apiBaseUrl,
    enabled: app.enabled,
    has_client_secret: app.hasClientSecret,
    has_developer_token: app.hasDeveloperToken,
    created_by: app.createdBy,
    created_at: iso(app.createdAt),
    updated_at: iso(app.updatedAt),
  };
}

export function platformJson(row: PlatformRow) {
  return {
    id: row.id,
    name: row.displayName,
    capabilities: row.capabilities,
  };
}

export function auditJson(row: AuditRow) {
  return {
    id: row.id,
    occurred_at: iso(row.occurredAt),
    actor: row.actor,
    action: row.action,
    target_type: row.targetType,
    target_id: row.targetId,
    connection_id: row.connectionId,
    client_address: row.clientAddress,
    user_agent: row.userAgent,
    outcome: row.outcome,
    detail: row.detail,
    hash: row.hash,
  };
}

/** An ad account as a person reads it in a table: its name and the platform's id for it. */
export function accountLabel(c: { accountName: string | null; externalAccountId: string }): string {
  return c.accountName ? `${c.accountName} (${c.externalAccountId})` : c.externalAccountId;
}

/** How a connection is named to a person: its name, else `platform:account`. Both work as CONN. */
export function connectionRef(c: {
  name: string | null;
  platform: string;
  externalAccountId: string;
}): string {
  return c.name ?? `${c.platform}:${c.externalAccountId}`;
}

/** spec/cli.md's connection shape; no secret ever appears in it. */
export function connectionJson(c: ConnectionView) {
  return {
    id: c.id,
    platform: c.platform,
    app_id: c.appId,
    app_label: c.appLabel,
    external_account_id: c.externalAccountId,
    account_name: c.accountName,
    name: c.name,
    status: c.status,
    status_message: c.statusMessage,
    consecutive_failures: c.consecutiveFailures,
    access_token_expires_at: iso(c.accessTokenExpiresAt),
    refresh_token_expires_at: iso(c.refreshTokenExpiresAt),
    last_refreshed_at: iso(c.lastRefreshedAt),
    connected_by: c.connectedBy,
    created_at: iso(c.createdAt),
  };
}

/** spec/cli.md's `token get --format json` document, also the daemon's token answer. */
export function tokenDocument(
  accessToken: string,
  tokenType: string,
  expiresAt: Date | null,
  connection: { id: string; platform: string; externalAccountId: string },
): TokenDocument {
  return {
    access_token: accessToken,
    token_type: tokenType,
    expires_at: iso(expiresAt),
    connection_id: connection.id,
    platform: connection.platform,
    external_account_id: connection.externalAccountId,
  };
}
