import { openContext, type ServiceContext } from '../services/context.js';
import type { Runtime } from './run.js';

/** Opens the vault for one command and closes it whatever happens. */
export async function withContext<T>(rt: Runtime, fn: (ctx: ServiceContext) => Promise<T>): Promise<T> {
  const ctx = await openContext(rt.config);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}
