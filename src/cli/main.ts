/**
 * The entry point, and the only module that touches process.exit. `--version` answers before
 * anything else is loaded: CI jobs call credvault many times and start-up time is theirs.
 */
import { VERSION } from '../version.js';

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  if (argv[0] !== 'daemon') {
    // A short-lived command: compile the embedded database's WebAssembly with the baseline compiler
    // only. Optimizing it would cost more CPU than the command's queries ever win back (about half the
    // start-up time of a command on the embedded database). The daemon keeps the optimizing tier.
    const { setFlagsFromString } = await import('node:v8');
    setFlagsFromString('--liftoff-only');
  }
  const { run } = await import('./run.js');
  const code = await run(argv, {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
  });
  process.exitCode = code;
  // Everything long-lived was closed by now; if a stray handle keeps the loop alive, do not hang a CI job.
  setTimeout(() => process.exit(code), 3000).unref();
}
