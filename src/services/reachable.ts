import { databaseFailure } from '../db/errors.js';
import { jitter, sleep } from '../util/backoff.js';

/**
 * How long a command keeps trying to store what only it holds (a refresh's answer, a rotated refresh
 * token) while the database cannot be reached: a restart with crash recovery or a failover takes
 * seconds to a minute, and a rotated refresh token lost with the process ends the grant at the next
 * refresh on a platform that rotates them.
 */
export const WRITE_PATIENCE_MS = 60_000;

/**
 * `attempt`, tried again with back-off while the database cannot be reached or does not answer, for
 * up to `patienceMs`. A try that got no answer may have committed (its COMMIT reached the server, its
 * answer did not): before the next one, `committed` looks for what it stored (its result, or null),
 * and only once the database answers it is the write made again. Any other failure, or the last one
 * past the patience (through `giveUp` when given), is thrown.
 */
export async function untilReachable<T>(
  attempt: () => Promise<T>,
  committed: () => Promise<T | null>,
  {
    patienceMs = WRITE_PATIENCE_MS,
    giveUp,
  }: { patienceMs?: number; giveUp?: (failure: string, cause: unknown) => Error } = {},
): Promise<T> {
  const giveUpAt = Date.now() + patienceMs;
  let unanswered = false;
  for (let tries = 1; ; tries++) {
    try {
      if (unanswered) {
        const found = await committed();
        if (found !== null) return found;
      }
      return await attempt();
    } catch (error) {
      const failure = databaseFailure(error);
      if (failure !== 'the database is unreachable' && failure !== 'the database did not answer in time')
        throw error;
      unanswered = true;
      const wait = jitter(Math.min(250 * 2 ** (tries - 1), 5_000), 0.3);
      if (Date.now() + wait > giveUpAt) throw giveUp ? giveUp(failure, error) : error;
      await sleep(wait);
    }
  }
}
