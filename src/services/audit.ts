import * as nodeCrypto from 'node:crypto';
import { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import * as store from '../db/store/audit.js';
import { GENESIS_HASH } from '../db/store/audit.js';
import { ConflictError, InternalError } from '../errors.js';

/**
 * The audit log: every creation, decryption, update, refresh, revocation and token served. Rows form
 * a hash chain (prev_hash → hash), so an edited or deleted row is found by `verifyAudit`. Records are
 * written in the caller's transaction: when the audit row cannot be written, the action fails with it
 * (fail closed).
 */

export interface Actor {
  name: string;
  address?: string | null;
  userAgent?: string | null;
}

export const AUDIT_OUTCOMES = ['success', 'failure', 'denied'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

export interface AuditEntry {
  action: string;
  targetType: string;
  targetId?: string | null;
  connectionId?: string | null;
  outcome: AuditOutcome;
  detail?: Record<string, unknown>;
  /** Overrides the context actor (the daemon writes entries for several clients in one batch). */
  actor?: Actor;
}

function assertNoSecret(value: unknown, path: string): void {
  if (value instanceof Secret)
    throw new InternalError(`refusing to write a secret into the audit log (${path})`);
  if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) assertNoSecret(inner, `${path}.${key}`);
  }
}

/**
 * JSON with object keys sorted at every depth (by UTF-16 code units), so the hash does not depend on
 * jsonb's key order. Written as loops: the daemon hashes every token it serves.
 */
export function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonical(value[i]);
    return `${out}]`;
  }
  const object = value as Record<string, unknown>;
  let out = '{';
  for (const key of Object.keys(object).sort()) {
    const inner = object[key];
    if (inner === undefined) continue;
    out += `${out.length > 1 ? ',' : ''}${JSON.stringify(key)}:${canonical(inner)}`;
  }
  return `${out}}`;
}

// One call instead of a Hash object per row, where Node has it (20.12 and later; a namespace import,
// so that older versions load this module at all).
const oneShot = (nodeCrypto as Partial<typeof nodeCrypto>).hash;
const sha256hex: (text: string) => string = oneShot
  ? (text) => oneShot('sha256', text, 'hex')
  : (text) => nodeCrypto.createHash('sha256').update(text).digest('hex');

type Hashable = Omit<store.AuditRow, 'hash'>;

const text = (value: string | null) => (value === null ? 'null' : JSON.stringify(value));

/**
 * The canonical JSON array of a row's fields, which its hash covers (the daemon hashes every record
 * it writes, so this is spelled out rather than walked: it equals `canonical([...fields])`). Without
 * its closing bracket: with `,"<hash>"]` added it is also the row as it is written (store.appendIfHead).
 */
function material(row: Hashable): string {
  return `[${row.id},${JSON.stringify(row.occurredAt.toISOString())},${text(row.actor)},${text(row.action)},${text(
    row.targetType,
  )},${text(row.targetId)},${text(row.connectionId)},${text(row.clientAddress)},${text(row.userAgent)},${text(
    row.outcome,
  )},${canonical(row.detail)},${text(row.prevHash)}`;
}

/** SHA-256 over the canonical JSON array of the row's fields. */
export function rowHash(row: Hashable): string {
  return sha256hex(`${material(row)}]`);
}

/** Where the hash chain ends: the last row's id and hash, and how many rows it holds. */
export interface AuditHead {
  lastId: number;
  lastHash: string;
  rowCount: number;
}

/** The rows of `entries` chained after `head` (as store.appendIfHead writes them), and the head they make. */
function chain(head: AuditHead, actor: Actor, list: AuditEntry[], now: Date) {
  let prevHash = head.lastHash;
  let id = head.lastId;
  const rows: string[] = [];
  for (const entry of list) {
    const who = entry.actor ?? actor;
    id += 1;
    const fields = material({
      id,
      // timestamptz keeps microseconds, a JS Date milliseconds: hash what will be read back.
      occurredAt: new Date(now.getTime()),
      actor: who.name,
      action: entry.action,
      targetType: entry.targetType,
      targetId: entry.targetId ?? null,
      connectionId: entry.connectionId ?? null,
      clientAddress: who.address ?? null,
      userAgent: who.userAgent ?? null,
      outcome: entry.outcome,
      detail: entry.detail ?? {},
      prevHash,
    });
    const hash = sha256hex(`${fields}]`);
    rows.push(`${fields},"${hash}"]`);
    prevHash = hash;
  }
  return { rows, head: { lastId: id, lastHash: prevHash, rowCount: head.rowCount + list.length } };
}

/** Locks the audit log's head in the caller's transaction (to be handed to recordAudit): its state. */
export const lockAuditHead = (db: Db): Promise<AuditHead> => store.lockHead(db);

/**
 * Writes audit rows inside the caller's transaction, with the chain head locked; returns the new head.
 * `held`: the head as the caller's transaction already locked it (lockAuditHead), not read again.
 */
export async function recordAudit(
  db: Db,
  actor: Actor,
  entries: AuditEntry | AuditEntry[],
  now = new Date(),
  held?: AuditHead,
): Promise<AuditHead | null> {
  const list = Array.isArray(entries) ? entries : [entries];
  if (list.length === 0) return null;
  for (const entry of list) assertNoSecret(entry.detail, entry.action);
  const locked = held ?? (await store.lockHead(db));
  const { rows, head } = chain(locked, actor, list, now);
  // The head is locked: it is still what was read, and the append cannot miss it.
  if ((await store.appendIfHead(db, rows, locked, head)) === null) {
    throw new Error('the audit chain head moved while it was locked');
  }
  return head;
}

/**
 * The rows of `entries` chained after a head this process believes current, as JSON arrays for
 * store.insertFromJson, and the head they make: for a statement that appends them only if the head
 * is still `known` (appendAudit, and the daemon's refresh writes).
 */
export function chainAfter(actor: Actor, entries: AuditEntry[], known: AuditHead, now = new Date()) {
  for (const entry of entries) assertNoSecret(entry.detail, entry.action);
  return chain(known, actor, entries, now);
}

/**
 * Appends audit rows in one statement, chained from the head this process wrote last (the daemon's
 * batches, one after another): no transaction and no lock round trip when nobody else wrote in
 * between. Returns the new head, or null when the head had moved (the caller then uses recordAudit).
 */
export async function appendAudit(
  db: Db,
  actor: Actor,
  entries: AuditEntry[],
  known: AuditHead,
  now = new Date(),
): Promise<AuditHead | null> {
  if (entries.length === 0) return known;
  const { rows, head } = chainAfter(actor, entries, known, now);
  const rowCount = await store.appendIfHead(db, rows, known, head);
  return rowCount === null ? null : { ...head, rowCount };
}

export interface AuditProblem {
  id: number;
  problem: string;
}

export interface AuditVerification {
  ok: boolean;
  rows: number;
  last_id: number;
  problems: AuditProblem[];
}

/** Walks the whole chain. Finds edited rows (hash), deleted rows (id gap, broken link, head mismatch). */
export async function verifyAudit(db: Db, pageSize = 2000): Promise<AuditVerification> {
  const problems: AuditProblem[] = [];
  let prevHash = GENESIS_HASH;
  let expectedId = 1;
  let rows = 0;
  let afterId = 0;
  // The head is read first and the walk stops at it: rows committed while we walk are not ours to
  // judge (writers hold the head until they commit, so everything up to it is there).
  const head = await store.readHead(db);
  const lastId = head?.lastId ?? Number.MAX_SAFE_INTEGER;
  for (;;) {
    const page = await store.pageAfter(db, afterId, pageSize, lastId);
    for (const row of page) {
      if (row.id !== expectedId) {
        problems.push({
          id: row.id,
          problem:
            row.id > expectedId
              ? `row${row.id - expectedId > 1 ? `s ${expectedId}-${row.id - 1}` : ` ${expectedId}`} deleted`
              : `row id ${row.id} out of sequence`,
        });
      }
      if (row.prevHash !== prevHash) {
        problems.push({
          id: row.id,
          problem: 'link to the previous row is broken (a row before it was deleted or altered)',
        });
      }
      const { hash, ...rest } = row;
      if (rowHash(rest) !== hash)
        problems.push({ id: row.id, problem: 'row content does not match its hash (edited)' });
      prevHash = hash;
      expectedId = row.id + 1;
      afterId = row.id;
      rows += 1;
    }
    if (page.length < pageSize) break;
  }
  if (head) {
    if (head.lastId !== afterId || head.lastHash !== prevHash) {
      problems.push({
        id: head.lastId,
        problem:
          head.lastId > afterId
            ? `the newest row${head.lastId - afterId > 1 ? `s (${afterId + 1}-${head.lastId})` : ` (${head.lastId})`} deleted`
            : 'the chain head does not match the newest row',
      });
    } else if (head.rowCount !== rows) {
      problems.push({ id: head.lastId, problem: `expected ${head.rowCount} rows, found ${rows}` });
    }
  } else if (rows > 0) {
    problems.push({ id: 0, problem: 'the chain head is missing' });
  } else if (await store.hasDataKeys(db)) {
    // init records the vault's making with its first data key: a vault with keys has records.
    problems.push({
      id: 0,
      problem: 'the audit log is empty, but the vault has data keys: its records were deleted',
    });
  }
  for (const row of await store.rowsOffChain(db, 100)) {
    problems.push({
      id: row.id,
      problem:
        row.problem === 'time'
          ? 'its time was changed (credvault writes whole milliseconds)'
          : `a record credvault did not write (its id is ${row.id < 1 ? 'below 1' : 'past the head of the chain'})`,
    });
  }
  return { ok: problems.length === 0, rows, last_id: afterId, problems };
}

export function auditBrokenError(result: AuditVerification): ConflictError {
  const first = result.problems.slice(0, 5).map((p) => `row ${p.id}: ${p.problem}`);
  return new ConflictError(`the audit log was altered: ${first.join('; ')}`, {
    hint: 'Compare with a backup to see what changed; the chain cannot be repaired by credvault.',
  });
}

export const listAudit = store.listRows;
