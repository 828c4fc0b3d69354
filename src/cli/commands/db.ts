import {
  migrationStatus,
  newerMigrations,
  newerWarning,
  migrate as runMigrations,
} from '../../db/migrate.js';
import { recordAudit } from '../../services/audit.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

export async function migrate(rt: Runtime): Promise<void> {
  await withContext(
    rt,
    async (ctx) => {
      const applied = await runMigrations(ctx.database);
      if (applied.length) {
        await ctx.transaction((tx) =>
          recordAudit(tx, ctx.actor, {
            action: 'db.migrate',
            targetType: 'database',
            outcome: 'success',
            detail: { applied },
          }),
        );
      }
      const newer = await newerMigrations(ctx.database);
      if (rt.out.json) return rt.out.writeJson({ applied, newer_migrations: newer });
      rt.out.success(applied.length ? `applied ${applied.join(', ')}` : 'database is up to date');
      if (newer) rt.out.warn(newerWarning(newer));
    },
    { create: true, anySchema: true },
  );
}

export async function status(rt: Runtime): Promise<void> {
  await withContext(
    rt,
    async (ctx) => {
      const states = await migrationStatus(ctx.database);
      const pending = states.filter((m) => !m.applied).length;
      const newer = await newerMigrations(ctx.database);
      if (rt.out.json) {
        return rt.out.writeJson({
          database: ctx.database.description,
          // The embedded database reached through the daemon is still the embedded database.
          kind: ctx.database.shared ? 'pglite' : ctx.database.kind,
          up_to_date: pending === 0,
          newer_migrations: newer,
          migrations: states.map((m) => ({
            tag: m.tag,
            created_at: m.createdAt.toISOString(),
            applied: m.applied,
          })),
        });
      }
      rt.out.list(states, (m) => m, [
        { header: 'MIGRATION', value: (m) => m.tag },
        { header: 'CREATED', value: (m) => m.createdAt.toISOString() },
        {
          header: 'STATE',
          value: (m) => (m.applied ? 'applied' : 'pending'),
          style: (m, text, c) => (m.applied ? c.green(text) : c.yellow(text)),
        },
      ]);
      rt.out.note(
        pending === 0
          ? `${ctx.database.description} is up to date`
          : `${pending} pending: run \`credvault db migrate\``,
      );
      if (newer) rt.out.warn(newerWarning(newer));
    },
    { anySchema: true },
  );
}
