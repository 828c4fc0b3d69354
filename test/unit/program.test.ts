import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/program.js';

/** Every option of every command, with the command's path. */
function options(
  command: Command,
  path: string[] = ['credvault'],
): Array<{ path: string; flags: string; takesValue: boolean; long: string }> {
  return [
    ...command.options.map((o) => ({
      path: path.join(' '),
      flags: o.flags,
      long: o.long ?? '',
      takesValue: o.required || o.optional,
    })),
    ...command.commands.flatMap((c) => options(c, [...path, c.name()])),
  ];
}

describe('the command line', () => {
  it('takes no secret as a flag value: secrets come from a prompt, standard input or a file', () => {
    const io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: {} } as never;
    const all = options(buildProgram(io, () => {}));
    expect(all.length).toBeGreaterThan(50);
    // A flag that names a secret either asks for it (no value: --new-client-secret prompts) or names a
    // file to read it from (--refresh-token-file, --new-key-file); --token-url is an endpoint.
    const secretValued = all.filter(
      (o) =>
        o.takesValue &&
        /secret|password|token|master-key|api-key/.test(o.long) &&
        !/-(file|url)$/.test(o.long),
    );
    expect(secretValued).toEqual([]);
    // The flags that do name secrets are there, as prompts and files.
    const named = all.filter((o) => /secret|token|key/.test(o.long)).map((o) => `${o.path} ${o.flags}`);
    expect(named).toContain('credvault apps update --new-client-secret');
    expect(named).toContain('credvault connections add --refresh-token-file <file>');
  });
});
