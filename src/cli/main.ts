/**
 * The entry point, and the only module that ends the process. (`credvault --version` is answered by
 * bin/credvault before this module loads.)
 */

const argv = process.argv.slice(2);
// A reader that stopped reading (`credvault … | head`) is not an error; any other failure to write is
// (bin/credvault says so and ends with exit 1; this is for a start without it: `npm run dev`).
if (process.stdout.listenerCount('error') === 0) {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    process.stderr.write(`error: could not write to standard output (${error.message})\n`);
    process.exit(1);
  });
}
// Standard error that cannot be written loses what it would say, not the exit code (as bin/credvault).
if (process.stderr.listenerCount('error') === 0) process.stderr.on('error', () => {});
// The event loop ran dry while the command still waited: a promise nothing will settle (on the embedded
// database, a query outside the transaction that holds its only connection). Never a silent exit 0.
let settled = false;
process.once('beforeExit', () => {
  if (settled) return;
  process.stderr.write(
    'error: internal: credvault stopped with its work unfinished (nothing left to wait for); nothing more was written\nPlease report this as a bug.\n',
  );
  process.exit(1);
});
const { run } = await import('./run.js');
const { code, signal } = await run(argv, {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
settled = true;
process.exitCode = code;
// Everything long-lived was closed by now; if a stray handle keeps the loop alive, do not hang a CI job.
// (A second at most: the daemon promises systemd to be gone within 10 s of SIGTERM.)
setTimeout(() => process.exit(code), 1000).unref();
if (signal) await endBy(signal);

/**
 * Ends this process by SIGNAL, as exec's child ended (src/cli/commands/token.ts says for which). By now
 * the vault is closed and the audit record written (before the child started); what is left is output
 * still on its way to a pipe, which a death by signal would drop.
 */
async function endBy(signal: NodeJS.Signals): Promise<void> {
  await Promise.all([drained(process.stdout), drained(process.stderr)]);
  // No listener may catch it (exec removed its own). With the last one gone the signal's default action
  // applies, ending the process, whatever credvault inherited: Node resets every disposition at its
  // start (a SIGINT ignored in a background job included) and restores the default when listening ends.
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
  // A signal a process sends itself arrives before kill() returns: still running means it did not end
  // the process after all. The exit code set above (128 + its number) ends it as a shell would say it.
}

/** Resolves once what was written to STREAM has been handed to the system (at once when nothing waits). */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('drain', resolve);
    stream.once('error', () => resolve());
  });
}
