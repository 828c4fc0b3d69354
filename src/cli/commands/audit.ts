import { parseDuration } from '../../config.js';
import type { AuditRow } from '../../db/store/audit.js';
import { escapeUnprintable, InvalidInputError, NotFoundError, quoted } from '../../errors.js';
import { AUDIT_OUTCOMES, auditBrokenError, listAudit, verifyAudit } from '../../services/audit.js';
import { auditJson } from '../../views.js';
import { withContext } from '../context.js';
import { filterValue } from '../input.js';
import type { Runtime } from '../run.js';

const ISO_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * A duration back from now, or an ISO 8601 date or time. One without a zone is UTC (as a date alone
 * is in JavaScript), whatever the machine's zone; a day the month does not have is refused.
 */
function parseTime(text: string, now: Date, flag: '--since' | '--until'): Date {
  const trimmed = text.trim();
  if (/^\d+(ms|s|m|h|d)$/.test(trimmed))
    return new Date(now.getTime() - parseDuration(text, flag, { zero: true }));
  const match = ISO_TIME.exec(trimmed);
  const [, year, month, day, hour, , , zone] = match ?? [];
  const date = match ? new Date(`${trimmed.replace(' ', 'T')}${hour && !zone ? 'Z' : ''}`) : null;
  const realDay =
    match !== null &&
    new Date(Date.UTC(Number(year), Number(month) - 1, Number(day))).getUTCDate() === Number(day);
  if (!date || Number.isNaN(date.getTime()) || !realDay) {
    throw new InvalidInputError(
      `${flag} must be an ISO 8601 time (2026-11-01T00:00:00Z; UTC when no zone is given) or a duration back from now such as 24h or 7d (got ${quoted(text)})`,
    );
  }
  return date;
}

/** `token.serve`, or `token.*` for every action under `token.` (the store's prefix form, `token.`). */
function parseAction(text: string): string {
  const match = /^([a-z][a-z_]*(?:\.[a-z][a-z_]*)*)(\.\*)?$/.exec(text.trim());
  if (!match) {
    throw new InvalidInputError(
      `--action must be an action such as token.serve, or a group such as token.* (got ${quoted(text)}); \`credvault audit list\` shows the actions recorded`,
    );
  }
  return match[2] ? `${match[1]}.` : match[1]!;
}

function parseOutcome(text: string): string {
  const outcome = text.trim().toLowerCase();
  if (!(AUDIT_OUTCOMES as readonly string[]).includes(outcome)) {
    throw new InvalidInputError(
      `--outcome must be one of ${AUDIT_OUTCOMES.join(', ')} (got ${quoted(text)})`,
    );
  }
  return outcome;
}

function parseLimit(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) {
    throw new InvalidInputError(`--limit must be a whole number from 1 to 100000 (got ${quoted(text)})`);
  }
  return n;
}

export async function list(
  rt: Runtime,
  opts: {
    connection?: string;
    actor?: string;
    action?: string;
    outcome?: string;
    since?: string;
    until?: string;
    limit: string;
  },
): Promise<void> {
  const limit = parseLimit(opts.limit);
  const now = new Date();
  const since = filterValue(opts.since, '--since', (text) => parseTime(text, now, '--since'));
  const until = filterValue(opts.until, '--until', (text) => parseTime(text, now, '--until'));
  if (since && until && until <= since) {
    throw new InvalidInputError(
      `--until (${until.toISOString()}) must be later than --since (${since.toISOString()}): nothing is both`,
    );
  }
  const connection = filterValue(opts.connection, '--connection');
  const actor = filterValue(opts.actor, '--actor');
  const action = filterValue(opts.action, '--action', parseAction);
  const outcome = filterValue(opts.outcome, '--outcome', parseOutcome);
  const rows = await withContext(rt, async (ctx) => {
    let connectionId: string | undefined;
    if (connection) {
      const { resolveConnection } = await import('../../services/connections.js');
      const { isUuid } = await import('../../services/apps.js');
      try {
        connectionId = (await resolveConnection(ctx.db, connection)).id;
      } catch (error) {
        // A connection that is gone (its app removed) keeps its audit trail: its id still finds it.
        if (!(error instanceof NotFoundError) || !isUuid(connection.trim())) throw error;
        connectionId = connection.trim().toLowerCase();
      }
    }
    return listAudit(ctx.db, { connectionId, actor, action, outcome, since, until, limit });
  });
  rt.out.list(
    rows,
    auditJson,
    [
      { header: 'ID', value: (r: AuditRow) => r.id },
      { header: 'TIME', value: (r) => r.occurredAt.toISOString() },
      // What others wrote (an actor is kept as given, control characters and all, for the record; a
      // daemon's client names its own user agent): escaped, so that a line break does not split a row
      // and an escape sequence never reaches the terminal. --json escapes them as JSON does.
      { header: 'ACTOR', value: (r) => escapeUnprintable(r.actor) },
      { header: 'ACTION', value: (r) => r.action },
      {
        header: 'TARGET',
        value: (r) => escapeUnprintable(r.targetId ? `${r.targetType} ${r.targetId}` : r.targetType),
      },
      {
        header: 'OUTCOME',
        value: (r) => r.outcome,
        style: (r, text, c) =>
          r.outcome === 'success' ? text : r.outcome === 'denied' ? c.yellow(text) : c.red(text),
      },
      {
        header: 'CLIENT',
        value: (r) => escapeUnprintable([r.clientAddress, r.userAgent].filter(Boolean).join(' ')),
      },
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
