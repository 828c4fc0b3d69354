import { parseDuration } from '../../config.js';
import type { AuditRow } from '../../db/store/audit.js';
import { InvalidInputError } from '../../errors.js';
import { auditBrokenError, listAudit, verifyAudit } from '../../services/audit.js';
import { auditJson } from '../../views.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

function parseSince(text: string, now: Date): Date {
  if (/^\d+(ms|s|m|h|d)$/.test(text.trim()))
    return new Date(now.getTime() - parseDuration(text, '--since', { zero: true }));
  const date = new Date(text);
  if (Number.isNaN(date.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    throw new InvalidInputError(
      `--since must be an ISO 8601 time (2026-11-01T00:00:00Z) or a duration such as 24h or 7d (got "${text}")`,
    );
  }
  return date;
}

function parseLimit(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) {
    throw new InvalidInputError(`--limit must be a whole number from 1 to 100000 (got "${text}")`);
  }
  return n;
}

export async function list(
  rt: Runtime,
  opts: { connection?: string; actor?: string; since?: string; limit: string },
): Promise<void> {
  const limit = parseLimit(opts.limit);
  const since = opts.since ? parseSince(opts.since, new Date()) : undefined;
  const rows = await withContext(rt, async (ctx) => {
    let connectionId: string | undefined;
    if (opts.connection) {
      const { resolveConnection } = await import('../../services/connections.js');
      connectionId = (await resolveConnection(ctx.db, opts.connection)).id;
    }
    return listAudit(ctx.db, { connectionId, actor: opts.actor, since, limit });
  });
  rt.out.list(
    rows,
    auditJson,
    [
      { header: 'ID', value: (r: AuditRow) => r.id },
      { header: 'TIME', value: (r) => r.occurredAt.toISOString() },
      { header: 'ACTOR', value: (r) => r.actor },
      { header: 'ACTION', value: (r) => r.action },
      { header: 'TARGET', value: (r) => (r.targetId ? `${r.targetType} ${r.targetId}` : r.targetType) },
      {
        header: 'OUTCOME',
        value: (r) => r.outcome,
        style: (r, text, c) =>
          r.outcome === 'success' ? text : r.outcome === 'denied' ? c.yellow(text) : c.red(text),
      },
      { header: 'CLIENT', value: (r) => [r.clientAddress, r.userAgent].filter(Boolean).join(' ') },
    ],
    'no audit records match',
  );
}

export async function verify(rt: Runtime): Promise<void> {
  const result = await withContext(rt, (ctx) => verifyAudit(ctx.db));
  if (!result.ok) {
    if (rt.out.json) rt.out.writeJson(result);
    throw auditBrokenError(result);
  }
  if (rt.out.json) return rt.out.writeJson(result);
  rt.out.success(
    `audit chain intact: ${result.rows} record${result.rows === 1 ? '' : 's'}, newest #${result.last_id}`,
  );
}
