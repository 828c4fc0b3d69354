import { parsePlatform } from '../../providers/catalog.js';
import {
  type ConnectionView,
  connectionView,
  countConnections,
  listConnections,
  parseStatus,
  renameConnection,
} from '../../services/connections.js';
import { revokeConnection } from '../../services/revoke.js';
import { refreshConnection } from '../../services/tokens.js';
import { accountLabel, connectionJson, connectionRef } from '../../views.js';
import { withContext } from '../context.js';
import { filterValue } from '../input.js';
import type { Column, Styler } from '../output.js';
import type { Runtime } from '../run.js';

/** "in 42m", "3d ago": how far a time is from now, the way an operator reads it. */
export function relative(date: Date | null, now = Date.now()): string | null {
  if (!date) return null;
  const ms = date.getTime() - now;
  const abs = Math.abs(Math.round(ms / 1000));
  const text =
    abs < 90
      ? `${abs}s`
      : abs < 90 * 60
        ? `${Math.round(abs / 60)}m`
        : abs < 36 * 3600
          ? `${Math.round(abs / 3600)}h`
          : `${Math.round(abs / 86400)}d`;
  // By the time itself, not its rounding: a refresh half a second ago is "0s ago", not "in 0s".
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

/**
 * The ACCESS TOKEN and REFRESH TOKEN columns of the human tables (connections list, status): the times
 * as they are only while `token get` would serve them. A connection that needs a person or was revoked
 * is refused whatever time its tokens have left (`refused`). One in `error` is refused while it cools
 * down after failed refreshes (`refused, retry in 4m`), and after that a refresh is tried before any
 * token is served (`refreshed first`); its refresh token is not refused by the platform (its time
 * stands). The JSON keeps the stored times (spec/cli.md) beside the status.
 */
export function tokenTimes(
  v: Pick<
    ConnectionView,
    'status' | 'accessTokenExpiresAt' | 'refreshTokenExpiresAt' | 'hasRefreshToken' | 'cooldownUntil'
  >,
  now = Date.now(),
): { access: string | null; refresh: string | null } {
  if (v.status === 'needs_reauth' || v.status === 'revoked') return { access: 'refused', refresh: 'refused' };
  const refresh = relative(v.refreshTokenExpiresAt, now) ?? (v.hasRefreshToken ? 'no end' : null);
  if (v.status === 'error') {
    const cooling = v.cooldownUntil && v.cooldownUntil.getTime() > now;
    return {
      access: cooling ? `refused, retry ${relative(v.cooldownUntil, now)}` : 'refreshed first',
      refresh,
    };
  }
  return { access: relative(v.accessTokenExpiresAt, now), refresh };
}

export function statusStyle(status: string, text: string, c: Styler): string {
  if (status === 'active') return c.green(text);
  if (status === 'error') return c.yellow(text);
  return c.red(text);
}

export const CONNECTION_COLUMNS: Column<ConnectionView>[] = [
  { header: 'ID', value: (v) => v.id },
  { header: 'CONNECTION', value: (v) => connectionRef(v) },
  { header: 'ACCOUNT', value: (v) => accountLabel(v) },
  { header: 'APP', value: (v) => v.appLabel },
  { header: 'STATUS', value: (v) => v.status, style: (v, text, c) => statusStyle(v.status, text, c) },
  { header: 'ACCESS TOKEN', value: (v) => tokenTimes(v).access },
];

export function printConnections(rt: Runtime, views: ConnectionView[]): void {
  rt.out.list(views, connectionJson, CONNECTION_COLUMNS, 'no connections');
}

export async function list(rt: Runtime, opts: { platform?: string; status?: string }): Promise<void> {
  const platform = filterValue(opts.platform, '--platform', parsePlatform);
  const status = filterValue(opts.status, '--status', parseStatus);
  const filters = [
    ...(platform ? [`--platform ${platform}`] : []),
    ...(status ? [`--status ${status}`] : []),
  ];
  const { views, all } = await withContext(rt, async (ctx) => {
    const views = await listConnections(ctx, { platform, status });
    // Nothing matched a filter: whether there are connections at all says which message is true.
    const all = views.length === 0 && filters.length && !rt.out.json ? await countConnections(ctx) : 0;
    return { views, all };
  });
  rt.out.list(
    views,
    connectionJson,
    CONNECTION_COLUMNS,
    all
      ? `no connection matches ${filters.join(' ')} (${all} connection${all === 1 ? '' : 's'} in all: \`credvault connections list\` shows them)`
      : 'no connections yet: connect one with `credvault connect PLATFORM`',
  );
}

function printOne(rt: Runtime, view: ConnectionView): void {
  const json = connectionJson(view);
  rt.out.item(json, [
    ...Object.entries(json).map(([key, value]) => [key.replace(/_/g, ' '), value] as [string, unknown]),
    ...Object.entries(view.details).map(
      ([key, value]) => [key.replace(/_/g, ' '), value] as [string, unknown],
    ),
  ]);
}

export async function show(rt: Runtime, ref: string): Promise<void> {
  printOne(rt, await withContext(rt, (ctx) => connectionView(ctx.db, ref)));
}

export async function rename(rt: Runtime, ref: string, name: string): Promise<void> {
  const view = await withContext(rt, (ctx) => renameConnection(ctx, ref, name));
  if (rt.out.json) return rt.out.writeJson(connectionJson(view));
  rt.out.success(`renamed to ${view.name}`);
}

export async function refresh(rt: Runtime, ref: string, opts: { force?: boolean }): Promise<void> {
  const view = await withContext(rt, async (ctx) => {
    const served = await refreshConnection(ctx, ref, opts.force === true);
    return connectionView(ctx.db, served.connection.id);
  });
  if (rt.out.json) return rt.out.writeJson(connectionJson(view));
  rt.out.success(
    `refreshed ${connectionRef(view)}; the access token expires ${relative(view.accessTokenExpiresAt) ?? 'when the platform says'}`,
  );
}

export async function revoke(rt: Runtime, ref: string, opts: { force?: boolean } = {}): Promise<void> {
  const report = await withContext(rt, (ctx) => revokeConnection(ctx, ref, { force: opts.force === true }));
  for (const warning of report.warnings) rt.out.warn(warning);
  if (rt.out.json) {
    return rt.out.writeJson({
      connections: report.connections.map(connectionJson),
      platform: report.platform,
      message: report.message,
      consent_page: report.consent_page,
    });
  }
  const names = report.connections.map(connectionRef).join(', ');
  if (report.platform === 'already') return rt.out.note(`${names} was already revoked`);
  if (report.connections.length > 1) rt.out.note(`the consent was shared by ${names}: all are revoked`);
  if (report.platform === 'revoked')
    rt.out.success(`revoked ${names} at the platform and destroyed its tokens here`);
  else {
    rt.out.success(`destroyed the tokens of ${names} here`);
    rt.out.warn(`${report.message}. Remove the app's access at ${report.consent_page}`);
  }
}
