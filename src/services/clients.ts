import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { parseDuration } from '../config.js';
import { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import { isUniqueViolation } from '../db/errors.js';
import type { ClientScope } from '../db/schema/api-clients.js';
import type { ClientRow } from '../db/store/clients.js';
import * as store from '../db/store/clients.js';
import { ConflictError, InvalidInputError, NotFoundError, quoted } from '../errors.js';
import { parsePlatform } from '../providers/catalog.js';
import { recordAudit } from './audit.js';
import { resolveConnection } from './connections.js';
import type { ServiceContext } from './context.js';

/**
 * Clients of the daemon's endpoint: a random token shown once, kept only as its SHA-256, scoped to
 * connections or platforms (or all), with a role and an optional expiry.
 */

export const ROLES = ['reader', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export type { ClientRow, ClientScope };

const TOKEN_PREFIX = 'cvc_';

export function hashClientToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant-time comparison of two hex SHA-256 digests. */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && left.length === 32 && timingSafeEqual(left, right);
}

export function looksLikeClientToken(value: string): boolean {
  return value.startsWith(TOKEN_PREFIX) && value.length === TOKEN_PREFIX.length + 43;
}

export function parseRole(value: string): Role {
  if ((ROLES as readonly string[]).includes(value)) return value as Role;
  throw new InvalidInputError(`unknown role ${quoted(value)}`, { hint: `Roles: ${ROLES.join(', ')}.` });
}

export const CLIENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** What a caller calls createClient's inputs, for the errors that point at them. */
export interface ClientInputNames {
  connections: string;
  platforms: string;
  all: string;
  expiresIn: string;
}

/** The command line's names (`credvault clients create`). */
const FLAG_NAMES: ClientInputNames = {
  connections: '--connection (repeatable)',
  platforms: '--platform (repeatable)',
  all: '--all',
  expiresIn: '--expires-in',
};

export interface CreateClientInput {
  name: string;
  connections: string[];
  platforms: string[];
  all: boolean;
  role: string;
  expiresIn: string | null;
  /** What the caller calls these inputs, for its errors (the command line's flags unless given). */
  names?: ClientInputNames;
}

export interface CreatedClient {
  client: ClientRow;
  token: Secret;
}

export async function createClient(ctx: ServiceContext, input: CreateClientInput): Promise<CreatedClient> {
  if (!CLIENT_NAME.test(input.name)) {
    throw new InvalidInputError(
      `client name ${quoted(input.name)} must start with a letter or digit and use only letters, digits, ".", "_" and "-"`,
    );
  }
  const names = input.names ?? FLAG_NAMES;
  const kinds = [input.connections.length > 0, input.platforms.length > 0, input.all].filter(Boolean).length;
  if (kinds !== 1) {
    throw new InvalidInputError(
      `give exactly one of ${names.connections}, ${names.platforms} and ${names.all}`,
    );
  }
  const role = parseRole(input.role);
  // An empty --expires-in (an unset variable in a script) is refused by parseDuration, not taken for
  // "never expires".
  const expiresAt =
    input.expiresIn !== null && input.expiresIn !== undefined
      ? new Date(Date.now() + parseDuration(input.expiresIn, names.expiresIn))
      : null;
  const token = new Secret(TOKEN_PREFIX + randomBytes(32).toString('base64url'));
  try {
    const client = await ctx.transaction(async (tx) => {
      let scope: ClientScope;
      if (input.all) scope = { all: true };
      else if (input.platforms.length)
        scope = { platforms: [...new Set(input.platforms.map(parsePlatform))] };
      else {
        const ids: string[] = [];
        for (const ref of input.connections) ids.push((await resolveConnection(tx, ref)).id);
        scope = { connections: [...new Set(ids)] };
      }
      if (await store.getUnrevokedByName(tx, input.name)) throw duplicate(input.name);
      // Older credvault builds in the fleet must not find a revoked client by the name (migration 0012).
      await store.renameRevoked(tx, input.name);
      const id = randomUUID();
      await store.insert(tx, {
        id,
        name: input.name,
        tokenHash: hashClientToken(token.reveal()),
        role,
        scope,
        createdBy: ctx.actor.name,
        expiresAt,
      });
      await recordAudit(tx, ctx.actor, {
        action: 'client.create',
        targetType: 'client',
        targetId: id,
        outcome: 'success',
        detail: { name: input.name, role, scope, expires_at: expiresAt?.toISOString() ?? null },
      });
      return (await store.getById(tx, id))!;
    });
    return { client, token };
  } catch (error) {
    if (isUniqueViolation(error)) throw duplicate(input.name);
    throw error;
  }
}

function duplicate(name: string): ConflictError {
  return new ConflictError(`a client named ${quoted(name)} already exists`, {
    hint: `Pick another name, or revoke the old one first (\`credvault clients revoke ${name}\`); its name can then be given again.`,
  });
}

export async function listClients(ctx: ServiceContext): Promise<ClientRow[]> {
  return store.list(ctx.db);
}

export async function revokeClient(ctx: ServiceContext, name: string): Promise<ClientRow> {
  return ctx.transaction(async (tx) => {
    const client = await store.getByName(tx, name);
    if (!client)
      throw new NotFoundError(`no client ${quoted(name)}`, { hint: 'See `credvault clients list`.' });
    if (client.revokedAt) return client;
    await store.revoke(tx, client.id);
    await recordAudit(tx, ctx.actor, {
      action: 'client.revoke',
      targetType: 'client',
      targetId: client.id,
      outcome: 'success',
      detail: { name },
    });
    return (await store.getById(tx, client.id))!;
  });
}

/** Whether a client may still be used: not revoked, not expired. */
export function isLiveClient(
  client: { revokedAt: Date | null; expiresAt: Date | null },
  now = Date.now(),
): boolean {
  return !client.revokedAt && !(client.expiresAt && client.expiresAt.getTime() <= now);
}

/** The client a token belongs to, if it is live (not revoked, not expired). */
export async function authenticateClient(db: Db, token: string, now = Date.now()): Promise<ClientRow | null> {
  if (!looksLikeClientToken(token)) return null;
  const hash = hashClientToken(token);
  const client = await store.getByTokenHash(db, hash);
  if (!client || !sameHash(client.tokenHash, hash)) return null;
  if (!isLiveClient(client, now)) return null;
  return client;
}

export function clientJson(client: ClientRow) {
  return {
    id: client.id,
    name: client.name,
    role: client.role,
    scope: client.scope,
    created_by: client.createdBy,
    created_at: client.createdAt.toISOString(),
    expires_at: client.expiresAt?.toISOString() ?? null,
    revoked_at: client.revokedAt?.toISOString() ?? null,
    last_used_at: client.lastUsedAt?.toISOString() ?? null,
  };
}
