import type { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import type { ClientRow } from '../db/store/clients.js';
import type { ConnectionRow } from '../db/store/connections.js';
import * as daemonStore from '../db/store/daemon.js';
import { isLiveClient } from '../services/clients.js';

/**
 * The daemon's memory: resolved connection refs, decrypted access tokens, authenticated clients.
 * Entries are dropped when another process changes what they were read from: at once on PostgreSQL
 * (LISTEN/NOTIFY), and by `revalidate()` (the embedded database has no other process to notify, and
 * on PostgreSQL it catches a change made without a notification).
 *
 * It answers only while the daemon knows that every change is notified to it: `suspend()` (its
 * LISTEN is not in place) makes every lookup a miss, so that requests read the database, and keeps
 * what it holds for `revalidate()` and `resume()` once the LISTEN is back. What a request read from
 * the database is remembered only if nothing was suspended, invalidated or cleared since it began
 * reading (`mark()`): an entry read before a change and stored after its notification was handled
 * would otherwise be served on, stale.
 */

export interface CachedToken {
  grantId: string;
  version: number;
  accessToken: Secret;
  tokenType: string;
  expiresAt: Date | null;
}

const CLIENT_TTL_MS = 60_000;

/** The refs a connection is remembered under: its id, its name and PLATFORM:ACCOUNT, as stored. */
export function canonicalRefs(connection: ConnectionRow): string[] {
  const refs = [connection.id];
  if (connection.name) refs.push(connection.name);
  if (connection.platform && connection.externalAccountId)
    refs.push(`${connection.platform}:${connection.externalAccountId}`);
  return refs;
}

export class DaemonCache {
  /**
   * A connection's own refs (its id, its name, PLATFORM:ACCOUNT as stored) → connection id: at most
   * three per connection held, whatever refs clients send (see canonicalRefs).
   */
  readonly #refs = new Map<string, string>();
  readonly #connections = new Map<string, ConnectionRow>();
  /** grant id → token. */
  readonly #tokens = new Map<string, CachedToken>();
  /** token hash → client. */
  readonly #clients = new Map<string, { client: ClientRow; at: number }>();
  #serving: boolean;
  /** Moves on at every suspend, resume, invalidation and clear (see mark()). */
  #epoch = 0;

  /** `serving`: false to start suspended (until the daemon listens). */
  constructor({ serving = true }: { serving?: boolean } = {}) {
    this.#serving = serving;
  }

  /** Whether lookups answer from memory. */
  get serving(): boolean {
    return this.#serving;
  }

  /** Lookups miss from now on, and nothing is remembered; what is held stays, for revalidate(). */
  suspend(): void {
    this.#serving = false;
    this.#epoch += 1;
  }

  /** Lookups answer again (once what is held was revalidated with the LISTEN in place). */
  resume(): void {
    this.#serving = true;
    this.#epoch += 1;
  }

  /** Taken before reading what a remember… call will store: stored only if nothing moved since. */
  mark(): number {
    return this.#epoch;
  }

  #current(since: number): boolean {
    return this.#serving && since === this.#epoch;
  }

  connectionByRef(ref: string): ConnectionRow | null {
    if (!this.#serving) return null;
    const id = this.#refs.get(ref);
    return id ? (this.#connections.get(id) ?? null) : null;
  }

  /**
   * Remembers a connection under the ref it was asked by, if that ref is one of its own (canonicalRefs).
   * Any other ref that resolves to it (padded with whitespace, an id in capitals, google-ads:…) is not
   * kept: a client could otherwise grow the daemon's memory without bound with ever-different refs.
   */
  rememberConnection(ref: string, connection: ConnectionRow, since: number): void {
    if (!this.#current(since)) return;
    if (!canonicalRefs(connection).includes(ref)) return;
    this.#connections.set(connection.id, connection);
    this.#refs.set(ref, connection.id);
  }

  token(grantId: string): CachedToken | null {
    if (!this.#serving) return null;
    return this.#tokens.get(grantId) ?? null;
  }

  rememberToken(token: CachedToken, since: number): void {
    if (!this.#current(since)) return;
    const current = this.#tokens.get(token.grantId);
    if (!current || current.version <= token.version) this.#tokens.set(token.grantId, token);
  }

  client(tokenHash: string, now = Date.now()): ClientRow | null {
    if (!this.#serving) return null;
    const hit = this.#clients.get(tokenHash);
    if (!hit || now - hit.at > CLIENT_TTL_MS) return null;
    return hit.client;
  }

  /**
   * The client a token was last verified as, however long ago (since the caches were last cleared),
   * unless it is known to be revoked or expired: only for /metrics while the database cannot be read
   * (see the server's authenticate), suspended or not (the database being down is when the LISTEN is
   * down too, and /metrics holds no secret).
   */
  verifiedClient(tokenHash: string): ClientRow | null {
    const hit = this.#clients.get(tokenHash);
    return hit && isLiveClient(hit.client) ? hit.client : null;
  }

  /** The database no longer knows a token (or its client is revoked or expired): forget it. */
  forgetClient(tokenHash: string): void {
    this.#clients.delete(tokenHash);
  }

  rememberClient(tokenHash: string, client: ClientRow, since: number): void {
    if (!this.#current(since)) return;
    this.#clients.set(tokenHash, { client, at: Date.now() });
  }

  /** A change notification: `grant:ID`, `connection:ID`, `client:ID` or `app:ID`. */
  invalidate(change: string): void {
    this.#epoch += 1;
    const [kind, id] = change.split(':', 2) as [string, string | undefined];
    if (!id) return this.clear();
    if (kind === 'grant') {
      this.#tokens.delete(id);
      for (const [cid, connection] of this.#connections)
        if (connection.tokenId === id) this.#dropConnection(cid);
    } else if (kind === 'connection') {
      const connection = this.#connections.get(id);
      if (connection?.tokenId) this.#tokens.delete(connection.tokenId);
      this.#dropConnection(id);
    } else if (kind === 'client') {
      for (const [hash, hit] of this.#clients) if (hit.client.id === id) this.#clients.delete(hash);
    } else {
      this.clear();
    }
  }

  #dropConnection(id: string): void {
    this.#connections.delete(id);
    for (const [ref, target] of this.#refs) if (target === id) this.#refs.delete(ref);
  }

  clear(): void {
    this.#epoch += 1;
    this.#refs.clear();
    this.#connections.clear();
    this.#tokens.clear();
    this.#clients.clear();
  }

  /** Re-reads what the cached entries came from and drops every entry that no longer matches. */
  async revalidate(db: Db): Promise<number> {
    const connectionIds = [...this.#connections.keys()];
    const clientIds = [...new Set([...this.#clients.values()].map((h) => h.client.id))];
    if (!connectionIds.length && !clientIds.length && !this.#tokens.size) return 0;
    const { connections, clients } = await daemonStore.snapshot(db, connectionIds, clientIds);
    let dropped = 0;
    const seen = new Map(connections.map((row) => [row.id, row]));
    for (const id of connectionIds) {
      const cached = this.#connections.get(id)!;
      const now = seen.get(id);
      const token = cached.tokenId ? this.#tokens.get(cached.tokenId) : undefined;
      if (
        !now ||
        now.status !== cached.status ||
        now.tokenId !== cached.tokenId ||
        now.name !== cached.name ||
        (token && now.version !== token.version)
      ) {
        if (cached.tokenId) this.#tokens.delete(cached.tokenId);
        this.#dropConnection(id);
        dropped += 1;
      }
    }
    // Tokens no cached connection points at (e.g. its connection was dropped above) go too.
    const live = new Set([...this.#connections.values()].map((c) => c.tokenId));
    for (const grantId of this.#tokens.keys()) if (!live.has(grantId)) this.#tokens.delete(grantId);
    const clientRows = new Map(clients.map((row) => [row.id, row]));
    for (const [hash, hit] of this.#clients) {
      const row = clientRows.get(hit.client.id);
      if (!row || !isLiveClient(row)) {
        this.#clients.delete(hash);
        dropped += 1;
      }
    }
    return dropped;
  }
}
