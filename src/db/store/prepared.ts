import type { Db } from '../client.js';

/** A statement drizzle has built, run with the values of its placeholders. */
interface Prepared<R> {
  execute(values: Record<string, unknown>): Promise<R>;
}

/**
 * A statement built once per database handle and run with placeholders. drizzle builds a query's
 * text anew at every run (90-180 µs for the daemon's claim and refresh write on the README's
 * machine, a tenth of the daemon's CPU in a sweep, which runs thousands of them); prepared, only its
 * values change. A transaction is a handle of its own: there it is built once per transaction.
 */
export function prepared<R>(name: string, build: (db: Db, name: string) => Prepared<R>) {
  const built = new WeakMap<Db, Prepared<R>>();
  return (db: Db, values: Record<string, unknown>): Promise<R> => {
    let statement = built.get(db);
    if (!statement) {
      statement = build(db, name);
      built.set(db, statement);
    }
    return statement.execute(values);
  };
}
