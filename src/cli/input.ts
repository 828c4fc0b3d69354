import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Secret } from '../crypto/secret.js';
import { InvalidInputError } from '../errors.js';
import type { Runtime } from './run.js';

/**
 * Input for commands. Secrets come from a hidden prompt, standard input or a file, never from argv.
 */

const MAX_INPUT_BYTES = 1024 * 1024;

/** Reads a stream to its end, refusing it as soon as it passes 1 MiB (never holding more). */
async function readCapped(stream: AsyncIterable<unknown>, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buffer.length;
    if (size > MAX_INPUT_BYTES) throw new InvalidInputError(`${what} is larger than 1 MiB`);
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function readStdin(rt: Runtime): Promise<string> {
  return readCapped(rt.io.stdin, 'standard input');
}

/**
 * Reads FILE, or standard input for "-". `usual` is the name the file usually has (`.env`): given a
 * folder that holds one, the hint names it.
 */
export async function readFileOrStdin(
  rt: Runtime,
  path: string,
  flag: string,
  usual?: string,
): Promise<string> {
  if (path === '-') {
    if (rt.io.stdin.isTTY) {
      throw new InvalidInputError(`${flag} - reads standard input, but standard input is a terminal`, {
        hint: `Pipe the content in, or give ${flag} a file.`,
      });
    }
    return readStdin(rt);
  }
  try {
    // Read as a stream with the cap: /dev/zero or a huge file is refused at 1 MiB, not read whole.
    const stream = createReadStream(path, { highWaterMark: 64 * 1024 });
    try {
      return await readCapped(stream, path);
    } finally {
      stream.destroy();
    }
  } catch (error) {
    if (error instanceof InvalidInputError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const inside = usual && code === 'EISDIR' ? join(path, usual) : null;
    const why: Record<string, [string, string]> = {
      ENOENT: ['no such file', 'Check the path (relative paths start from the current folder).'],
      EISDIR: [
        'it is a folder',
        inside && existsSync(inside)
          ? `Give ${flag} the file inside it: ${inside}.`
          : `Give ${flag} the file inside it.`,
      ],
      EACCES: ['permission denied', 'Give this user read access to it, or copy it somewhere readable.'],
    };
    const [reason, hint] = why[code ?? ''] ?? [code ?? 'unreadable', 'Check the path.'];
    throw new InvalidInputError(`cannot read ${path} (${flag}): ${reason}`, { hint });
  }
}

/**
 * A filter flag's value, through `parse`: undefined when the flag was not given; an empty one (an
 * unset variable in a script) is refused rather than taken for "no filter", which would answer with
 * everything.
 */
export function filterValue(value: string | undefined, flag: string): string | undefined;
export function filterValue<T>(
  value: string | undefined,
  flag: string,
  parse: (text: string) => T,
): T | undefined;
export function filterValue<T>(
  value: string | undefined,
  flag: string,
  parse?: (text: string) => T,
): T | string | undefined {
  if (value === undefined) return undefined;
  if (!value.trim()) {
    throw new InvalidInputError(`${flag} was given an empty value`, {
      hint: `Give ${flag} a value, or leave it out.`,
    });
  }
  return parse ? parse(value) : value;
}

/**
 * The first line that arrives on standard input, without waiting for its end (a script writes it once
 * it has it); null when the input ends first or nothing comes within `timeoutMs`. Not for secrets.
 */
export async function readFirstLine(rt: Runtime, timeoutMs: number): Promise<string | null> {
  const { createInterface } = await import('node:readline');
  const stdin = rt.io.stdin as NodeJS.ReadableStream;
  const lines = createInterface({ input: stdin, crlfDelay: Number.POSITIVE_INFINITY });
  return new Promise<string | null>((resolve) => {
    const done = (line: string | null) => {
      clearTimeout(timer);
      lines.removeAllListeners();
      lines.close();
      stdin.pause();
      resolve(line);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    lines.once('line', (line) => done(line.slice(0, 16 * 1024)));
    lines.once('close', () => done(null));
  });
}

/** One line from standard input (for a secret piped in), trimmed as the prompt and a file are. */
export async function readSecretLine(rt: Runtime, what: string): Promise<Secret> {
  const text = (await readStdin(rt)).replace(/\r?\n$/, '');
  if (text.includes('\n')) throw new InvalidInputError(`${what} on standard input must be a single line`);
  if (!text.trim()) throw new InvalidInputError(`standard input was empty; expected ${what}`);
  return new Secret(text.trim());
}

/**
 * What an @inquirer prompt is given: the runtime's streams, and a signal that cancels it when the input
 * ends (Ctrl-D at the terminal, or standard input closing). Inquirer's readline closes then, but its
 * promise never settles: with nothing left to wait for, the process ended as an internal error. The
 * signal rejects it with AbortPromptError, which `run` reports as Ctrl-C's ExitPromptError: `cancelled`,
 * exit 2, nothing changed. Ctrl-D anywhere in a prompt cancels it (readline would delete a character
 * on a non-empty line; an answer half typed and Ctrl-D is taken as "stop", the safe reading).
 * `release` removes the listeners once the prompt is over.
 */
export function promptContext(rt: Runtime): {
  context: { input: NodeJS.ReadableStream; output: NodeJS.WritableStream; signal: AbortSignal };
  release: () => void;
} {
  const input = rt.io.stdin as NodeJS.ReadableStream;
  const ended = new AbortController();
  const end = () => ended.abort(new Error('the input ended'));
  const key = (_: unknown, pressed?: { ctrl?: boolean; name?: string }) => {
    if (pressed?.ctrl && pressed.name === 'd') end();
  };
  input.on('keypress', key);
  input.once('end', end);
  input.once('close', end);
  return {
    context: { input, output: rt.io.stderr as NodeJS.WritableStream, signal: ended.signal },
    release: () => {
      input.removeListener('keypress', key);
      input.removeListener('end', end);
      input.removeListener('close', end);
    },
  };
}

/** Runs one prompt with promptContext's streams and signal, releasing its listeners after. */
export async function ask<T>(
  rt: Runtime,
  run: (context: ReturnType<typeof promptContext>['context']) => Promise<T>,
) {
  const { context, release } = promptContext(rt);
  try {
    return await run(context);
  } finally {
    release();
  }
}

/** A hidden prompt on the terminal. Callers check `rt.interactive` first and say which input to give. */
export async function promptSecret(rt: Runtime, message: string, options: { optional?: boolean } = {}) {
  const { password } = await import('@inquirer/prompts');
  const value = await ask(rt, (context) =>
    password(
      {
        message,
        mask: '*',
        validate: (v: string) => (options.optional || v.trim() !== '' ? true : 'required'),
      },
      context,
    ),
  );
  return value.trim() === '' ? null : new Secret(value.trim());
}

export async function confirm(rt: Runtime, message: string): Promise<boolean> {
  const { confirm: yesNo } = await import('@inquirer/prompts');
  return ask(rt, (context) => yesNo({ message, default: false }, context));
}
