import { clientJson, createClient, listClients, revokeClient } from '../../services/clients.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

interface CreateFlags {
  connection: string[];
  platform: string[];
  all?: boolean;
  role: string;
  expiresIn?: string;
}

/** Prints the new client token once: alone on stdout, or with its name, role and scope under --json. */
export async function create(rt: Runtime, name: string, opts: CreateFlags): Promise<void> {
  const { client, token } = await withContext(rt, (ctx) =>
    createClient(ctx, {
      name,
      connections: opts.connection,
      platforms: opts.platform,
      all: opts.all === true,
      role: opts.role,
      expiresIn: opts.expiresIn ?? null,
    }),
  );
  if (rt.out.json) {
    return rt.out.writeJson({
      name: client.name,
      token: token.reveal(),
      role: client.role,
      scope: client.scope,
      expires_at: client.expiresAt?.toISOString() ?? null,
    });
  }
  rt.out.raw(token.reveal());
  rt.out.note(`This token is shown once; only its hash is kept. Give it to ${client.name} now.`);
}

export async function list(rt: Runtime): Promise<void> {
  const clients = await withContext(rt, (ctx) => listClients(ctx));
  rt.out.list(
    clients,
    clientJson,
    [
      { header: 'NAME', value: (c) => c.name },
      { header: 'ROLE', value: (c) => c.role },
      {
        header: 'SCOPE',
        value: (c) =>
          c.scope.all
            ? 'all'
            : c.scope.platforms
              ? c.scope.platforms.join(' ')
              : `${c.scope.connections?.length ?? 0} connection(s)`,
      },
      { header: 'EXPIRES', value: (c) => c.expiresAt?.toISOString() ?? 'never' },
      {
        header: 'STATE',
        value: (c) =>
          c.revokedAt ? 'revoked' : c.expiresAt && c.expiresAt < new Date() ? 'expired' : 'active',
        style: (_c, text, s) => (text === 'active' ? text : s.yellow(text)),
      },
      { header: 'LAST USED', value: (c) => c.lastUsedAt?.toISOString() },
    ],
    'no clients yet: create one with `credvault clients create NAME --all`',
  );
}

export async function revoke(rt: Runtime, name: string): Promise<void> {
  const client = await withContext(rt, (ctx) => revokeClient(ctx, name));
  if (rt.out.json) return rt.out.writeJson(clientJson(client));
  rt.out.success(`revoked client ${client.name}; its token no longer opens anything`);
}
