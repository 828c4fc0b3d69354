import type { Db } from '../db/client.js';
import type { ConnectionRow } from '../db/store/connections.js';
import * as store from '../db/store/connections.js';
import { NotFoundError } from '../errors.js';
import { isPlatformId } from '../providers/catalog.js';
import { isUuid } from './apps.js';

export type { ConnectionRow };

/** CONN ref: an id, `platform:external_account_id` (kebab platform accepted), or a connection's name. */
export async function resolveConnection(db: Db, ref: string): Promise<ConnectionRow> {
  const trimmed = ref.trim();
  if (isUuid(trimmed)) {
    const row = await store.getById(db, trimmed.toLowerCase());
    if (row) return row;
  }
  const colon = trimmed.indexOf(':');
  if (colon > 0) {
    const platform = trimmed.slice(0, colon).toLowerCase().replace(/-/g, '_');
    if (isPlatformId(platform)) {
      const row = await store.getByAccount(
        db,
        platform,
        normalizeAccountId(platform, trimmed.slice(colon + 1)),
      );
      if (row) return row;
    }
  }
  const byName = await store.getByName(db, trimmed);
  if (byName) return byName;
  throw new NotFoundError(`no connection "${trimmed}"`, {
    hint: 'Give an id, platform:account_id (e.g. google_ads:1234567890) or a name; see `credvault connections list`.',
  });
}

/** Account ids as each platform writes them: Google without dashes, LinkedIn without the URN prefix. */
export function normalizeAccountId(platform: string, id: string): string {
  const trimmed = id.trim();
  if (platform === 'google_ads') return trimmed.replace(/-/g, '');
  if (platform === 'linkedin_ads') return trimmed.replace(/^urn:li:sponsoredAccount:/, '');
  return trimmed;
}
