import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BIN } from './paths.js';
import type { TestVault } from './vault.js';
import { until } from './wait.js';

/** Whether script(1) is here to give a command a terminal (util-linux). */
export const HAS_SCRIPT = existsSync('/usr/bin/script');

/**
 * Runs `credvault ARGS` at a terminal (script(1) gives it one) on `vault`, waits for `prompt` in what
 * it shows, types `keys`, and returns everything shown, ending with `exit=N` (the command's exit code).
 * `args` is shell words, quoted by the caller where needed.
 */
export async function atTerminal(
  vault: TestVault,
  args: string,
  prompt: string,
  keys: string,
): Promise<string> {
  const command = `'${process.execPath}' '${BIN}' ${args}; echo "exit=$?"`;
  const child = spawn('/usr/bin/script', ['-qec', command, '/dev/null'], {
    env: { ...vault.env } as NodeJS.ProcessEnv,
    cwd: vault.root,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  try {
    await until(() => out.includes(prompt), { timeoutMs: 30_000 });
    child.stdin!.write(keys);
    await until(() => /exit=\d+/.test(out), { timeoutMs: 15_000 });
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  return out;
}
