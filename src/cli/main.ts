/**
 * The entry point, and the only module that ends the process. (`credvault --version` is answered by
 * bin/credvault before this module loads.)
 */

const argv = process.argv.slice(2);
// A reader that stopped reading (`credvault … | head`) is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
});
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
const code = await run(argv, {
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
