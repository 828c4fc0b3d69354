// A build-time patch of postgres.js 3.4.9 (bundled into dist/ by scripts/build.mjs), for a known
// upstream bug: a small write is deferred with setImmediate, and when the connection has closed by
// then (its PostgreSQL session terminated, a failover, a proxy cutting it), the deferred write calls
// `null.write` and the TypeError, thrown from a timer, ends the process with a stack trace
// (https://github.com/porsager/postgres/issues/1154, #1208; unmerged fixes #1168, #1176). Seen here:
// a few in a hundred credvault commands whose sessions were terminated under them died that way
// instead of exiting 8. The guard drops the write when the socket is gone and fails the queries
// waiting on that connection with CONNECTION_CLOSED, which credvault reports as exit 8 (dropping the
// write alone, as the upstream pull requests do, left a query on a reserved connection waiting
// forever); the connection then takes its next query afresh. A close also forgets a pending write, so
// that the connection, when it reconnects, sends nothing left from its dead session.
// The build fails if the code it patches is not found (a new postgres.js release: check whether the
// bug is fixed there, then drop or adapt this).
import { readFile } from 'node:fs/promises';

const FILE = /[\\/]node_modules[\\/]postgres[\\/]src[\\/]connection\.js$/;

/** The patched text of postgres.js's src/connection.js. */
export function guardConnection(text) {
  const replace = (from, to, count) => {
    const found = text.split(from).length - 1;
    if (found !== count) {
      throw new Error(
        `postgres-guard: expected ${count} of ${JSON.stringify(from)} in postgres/src/connection.js, found ${found}; see scripts/postgres-guard.mjs`,
      );
    }
    text = text.split(from).join(to);
  };
  replace(
    '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)',
    "  function nextWrite(fn) {\n    if (!socket) {\n      nextWriteTimer !== null && clearImmediate(nextWriteTimer)\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      query = null\n      return false\n    }\n    const x = socket.write(chunk, fn)",
    1,
  );
  // terminate() and closed(): the pending write goes with the session it was for.
  replace(
    '    clearImmediate(nextWriteTimer)\n',
    '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n',
    2,
  );
  return text;
}

/** The esbuild plugin that applies guardConnection to postgres.js as it is bundled. */
export const postgresGuard = {
  name: 'postgres-guard',
  setup(build) {
    build.onLoad({ filter: FILE }, async (args) => ({
      contents: guardConnection(await readFile(args.path, 'utf8')),
      loader: 'js',
    }));
  },
};
