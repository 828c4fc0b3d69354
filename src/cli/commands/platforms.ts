import type { PlatformRow } from '../../db/store/platforms.js';
import { parsePlatform } from '../../providers/catalog.js';
import { listPlatforms, seedPlatforms, showPlatform } from '../../services/platforms.js';
import { platformJson } from '../../views.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

export async function seed(rt: Runtime): Promise<void> {
  const changed = await withContext(rt, (ctx) => seedPlatforms(ctx));
  if (rt.out.json) return rt.out.writeJson({ changed });
  rt.out.success(changed.length ? `seeded ${changed.join(', ')}` : 'platforms are up to date');
}

export async function list(rt: Runtime): Promise<void> {
  const rows = await withContext(rt, (ctx) => listPlatforms(ctx));
  const cap = (row: PlatformRow, key: string) => row.capabilities[key] as string | boolean | undefined;
  rt.out.list(
    rows,
    platformJson,
    [
      { header: 'PLATFORM', value: (r) => r.id },
      { header: 'NAME', value: (r) => r.displayName },
      { header: 'PKCE', value: (r) => (cap(r, 'pkce') ? 'yes' : 'no') },
      { header: 'ROTATING RT', value: (r) => (cap(r, 'refresh_token_rotation') ? 'yes' : 'no') },
      { header: 'VALIDATE-ONLY', value: (r) => cap(r, 'validate_only') },
      { header: 'BUDGET UNIT', value: (r) => cap(r, 'budget_unit') },
      { header: 'DEV TOKEN', value: (r) => cap(r, 'developer_token') },
    ],
    'no platforms in this database: run `credvault platforms seed` (or `credvault init`)',
  );
}

export async function show(rt: Runtime, platform: string): Promise<void> {
  const id = parsePlatform(platform);
  const row = await withContext(rt, (ctx) => showPlatform(ctx, id));
  rt.out.item(platformJson(row), [
    ['platform', row.id],
    ['name', row.displayName],
    ...Object.entries(row.capabilities).map(
      ([key, value]) => [key.replace(/_/g, ' '), value] as [string, unknown],
    ),
  ]);
}
