import type { PlatformRow } from '../db/store/platforms.js';
import * as store from '../db/store/platforms.js';
import { NotFoundError } from '../errors.js';
import { PLATFORM_IDS, PLATFORMS, type PlatformId } from '../providers/catalog.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';

export type { PlatformRow };

/** Writes the four platforms and their capabilities; returns the ids that were added or changed. */
export async function seedPlatforms(ctx: ServiceContext): Promise<string[]> {
  return ctx.transaction(async (tx) => {
    const changed: string[] = [];
    for (const id of PLATFORM_IDS) {
      const info = PLATFORMS[id];
      const capabilities = { ...info.capabilities, default_api_version: info.defaults.apiVersion };
      if (await store.upsert(tx, { id, displayName: info.displayName, capabilities })) changed.push(id);
    }
    if (changed.length) {
      await recordAudit(tx, ctx.actor, {
        action: 'platforms.seed',
        targetType: 'platform',
        outcome: 'success',
        detail: { changed },
      });
    }
    return changed;
  });
}

export async function listPlatforms(ctx: ServiceContext): Promise<PlatformRow[]> {
  return store.list(ctx.db);
}

export async function showPlatform(ctx: ServiceContext, id: PlatformId): Promise<PlatformRow> {
  const row = await store.get(ctx.db, id);
  if (!row) {
    throw new NotFoundError(`platform ${id} is not seeded in this database`, {
      hint: 'Run `credvault platforms seed` (or `credvault init`).',
    });
  }
  return row;
}
