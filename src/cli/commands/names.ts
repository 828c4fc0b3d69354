import * as appStore from '../../db/store/apps.js';
import * as clientStore from '../../db/store/clients.js';
import * as connectionStore from '../../db/store/connections.js';
import { InvalidInputError, quoted } from '../../errors.js';
import { APP_LABEL } from '../../services/apps.js';
import { CLIENT_NAME } from '../../services/clients.js';
import { CONNECTION_NAME } from '../../services/connections.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

/** A platform:account ref a shell word holds as it is. */
const PLATFORM_REF = /^[a-z_]+:[A-Za-z0-9_.-]+$/;

export const NAME_KINDS = ['connections', 'apps', 'clients'] as const;
export type NameKind = (typeof NAME_KINDS)[number];

/**
 * `credvault __names KIND` (hidden): the names shell completion offers, one per line. Reads names
 * only (no secret, no key, no audit row), and waits at most half a second for an embedded database
 * another command holds: a TAB must not hang. Revoked connections and clients are left out; only
 * names a shell word can hold as they are (the patterns credvault accepts) are printed.
 */
export async function names(rt: Runtime, kind: string): Promise<void> {
  if (!(NAME_KINDS as readonly string[]).includes(kind)) {
    throw new InvalidInputError(`names of ${quoted(kind)}: say ${NAME_KINDS.join(', ')}`);
  }
  const quick = { ...rt, config: { ...rt.config, lockTimeoutMs: Math.min(rt.config.lockTimeoutMs, 500) } };
  // A TAB must not hang on a database that does not answer: nothing is offered after two seconds.
  setTimeout(() => process.exit(0), 2_000).unref();
  const list = await withContext(quick, async (ctx): Promise<string[]> => {
    if (kind === 'apps') {
      return (await appStore.list(ctx.db))
        .filter((app) => APP_LABEL.test(app.label))
        .map((app) => `${app.platform}/${app.label}`);
    }
    if (kind === 'clients') {
      return (await clientStore.list(ctx.db))
        .filter((client) => !client.revokedAt && CLIENT_NAME.test(client.name))
        .map((client) => client.name);
    }
    // A connection by its name, or one without a name by its platform:account.
    return (await connectionStore.listViews(ctx.db, {}))
      .filter((connection) => connection.status !== 'revoked')
      .map((connection) => connection.name ?? `${connection.platform}:${connection.externalAccountId}`)
      .filter((ref) => CONNECTION_NAME.test(ref) || PLATFORM_REF.test(ref));
  });
  rt.out.raw(list.length ? `${[...new Set(list)].sort().join('\n')}\n` : '');
}
