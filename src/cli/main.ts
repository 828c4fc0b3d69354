/**
 * The entry point, and the only module that ends the process. (`credvault --version` is answered by
 * bin/credvault before this module loads.)
 */

const argv = process.argv.slice(2);
// The command word, after the global options (`credvault --home /srv daemon` is the daemon too);
// these are program.ts's global options that take a value.
const withValue = new Set(['--database-url', '--home', '--actor']);
let at = 0;
while (at < argv.length && argv[at]!.startsWith('-')) at += withValue.has(argv[at]!) ? 2 : 1;
const { setFlagsFromString } = await import('node:v8');
if (argv[at] !== 'daemon') {
  // A short-lived command: compile the embedded database's WebAssembly with the baseline compiler
  // only. Optimizing it costs more CPU than a command's few queries win back (about half the start-up
  // time of a command on the embedded database). The daemon keeps the optimizing tier.
  setFlagsFromString('--liftoff-only');
} else {
  // A long-running process: let the heap grow to 1.5× the live data after a full collection, not
  // V8's up-to-4× for a busy process. A sweep of 10,000 refreshes then peaks at about 140 MB of RSS
  // instead of 200, at the same speed (npm run bench -- daemon).
  setFlagsFromString('--heap-growing-percent=50');
}
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
setTimeout(() => process.exit(code), 3000).unref();
