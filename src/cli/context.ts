import { assertNotBehind } from '../db/migrate.js';
import { openContext, type ServiceContext } from '../services/context.js';
import type { Runtime } from './run.js';

/** Opens the vault for one command and closes it whatever happens. */
export async function withContext<T>(
  rt: Runtime,
  fn: (ctx: ServiceContext) => Promise<T>,
  options: { create?: boolean; anySchema?: boolean } = {},
): Promise<T> {
  if (!rt.config.databaseUrl) {
    // A short-lived command on the embedded database: compile its WebAssembly with the baseline
    // compiler only. Optimizing it costs more CPU than a command's few queries win back (about half
    // the start-up time of a command on the embedded database). The daemon keeps the optimizing tier.
    (await import('node:v8')).setFlagsFromString('--liftoff-only');
  }
  const ctx = await openContext(rt.config, undefined, options);
  try {
    // `db migrate` and `db status` are how a schema that is behind gets seen and brought up.
    if (!options.anySchema) await assertNotBehind(ctx.database);
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}
