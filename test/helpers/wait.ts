/**
 * Waiting in a test for something to happen, by the clock.
 *
 * A wait for what the test then asserts ("until the platform is asked; it was asked once") has a
 * generous deadline: it ends as soon as its condition holds, so it costs nothing when all goes well,
 * and a slow, busy machine does not run it out (there, a daemon on the embedded database can take
 * 12 s to start while other test files run beside it). The deadline is a time, not a number of
 * checks: a check can itself take long (an HTTP request, a query).
 *
 * Not for a bound that is what the test shows ("answers within its 3 s deadline", "ends within 10 s
 * of SIGTERM", "is not asked again within 4 s"): such a test keeps its own bound, timed from the
 * event it is about.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from 'postgres';

/** How long a wait for something that is to happen lasts at most (tests have 180 s each). */
export const WAIT_MS = 60_000;

/**
 * Checks `condition` every `intervalMs` until it holds (true), or until `timeoutMs` have passed
 * (false; it is checked once more at the end). No error of its own when the time runs out: the
 * assertion after it shows what was last seen.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  { timeoutMs = WAIT_MS, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(intervalMs, left));
  }
}

/**
 * Waits (WAIT_MS unless told) until at least `n` sessions of the database `sql` is connected to wait
 * for a lock: the commands or statements a test started are where it wants them (behind a lock it
 * holds). How many waited at the last look.
 */
export async function untilLockWaits(
  sql: Sql,
  n = 1,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<number> {
  let waiting = 0;
  await until(
    async () => {
      const [row] = await sql<Array<{ n: number }>>`
        select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`;
      waiting = row!.n;
      return waiting >= n;
    },
    { intervalMs: 20, ...options },
  );
  return waiting;
}
