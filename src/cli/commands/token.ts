import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { isatty } from 'node:tty';
import { MAX_MIN_TTL_SECONDS } from '../../config.js';
import { vaultSecretVariables } from '../../crypto/key-sources.js';
import { Secret } from '../../crypto/secret.js';
import { CredvaultError, type ErrorOptions, InvalidInputError, quoted } from '../../errors.js';
import {
  type EnvValue,
  EXPORTED_VARIABLES,
  exportCredentials,
  FOREIGN_VARIABLES,
  googleAdsYaml,
} from '../../services/export.js';
import { getValidAccessToken } from '../../services/tokens.js';
import { shellQuote } from '../../util/shell.js';
import { tokenDocument } from '../../views.js';
import { withContext } from '../context.js';
import { formatToken } from '../fast-token.js';
import type { Runtime } from '../run.js';

export const FORMATS = ['raw', 'json', 'header', 'env', 'google-ads-yaml'] as const;
type Format = (typeof FORMATS)[number];

function parseMinTtl(text: string): number {
  // Digits only, as the daemon's route and the fast path take it: not "" (0), 0x3c or 1e2.
  const n = /^\d{1,8}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_MIN_TTL_SECONDS) {
    throw new InvalidInputError(
      `--min-ttl must be whole seconds from 0 to ${MAX_MIN_TTL_SECONDS} (a year; got ${quoted(text)})`,
    );
  }
  return n;
}

function parseFormat(text: string | undefined, json: boolean): Format {
  if (text === undefined) return json ? 'json' : 'raw';
  // --json promises one JSON document; the other formats print lines (secrets among them, for env).
  if (json && text !== 'json') {
    throw new InvalidInputError(`--json prints the token as JSON and does not go with --format ${text}`, {
      hint: 'Give one of them: --json (or --format json), or --format alone.',
    });
  }
  if ((FORMATS as readonly string[]).includes(text)) return text as Format;
  throw new InvalidInputError(`unknown --format ${quoted(text)}`, {
    hint: `Formats: ${FORMATS.join(', ')}.`,
  });
}

function reveal(value: EnvValue): string {
  return value instanceof Secret ? value.reveal() : value;
}

/** KEY=value lines a POSIX shell can eval: values quoted unless they are plainly safe. */
function shellLine(name: string, value: string): string {
  return `${name}=${value === '' ? '' : shellQuote(value)}`;
}

export async function get(
  rt: Runtime,
  ref: string,
  opts: { minTtl: string; format?: string },
): Promise<void> {
  const format = parseFormat(opts.format, rt.out.json);
  const request = { minTtlSeconds: parseMinTtl(opts.minTtl), purpose: `token get --format ${format}` };
  if (format === 'env') {
    const { vars } = await withContext(rt, (ctx) => exportCredentials(ctx, ref, request));
    return rt.out.raw(vars.map(([name, value]) => shellLine(name, reveal(value))).join('\n'));
  }
  if (format === 'google-ads-yaml') {
    return rt.out.raw(await withContext(rt, (ctx) => googleAdsYaml(ctx, ref, request)));
  }
  const served = await withContext(rt, (ctx) => getValidAccessToken(ctx, ref, request));
  const doc = tokenDocument(
    served.accessToken.reveal(),
    served.tokenType,
    served.expiresAt,
    served.connection,
  );
  // The same printing as the fast path through a running daemon.
  rt.out.raw(formatToken(doc, format));
}

// What a person or a supervisor sends to ask something of the program: all for the child. SIGUSR1 too:
// left to Node, it would open a debugger in credvault (the process that holds the vault's key) and
// never reach the child; SIGUSR2 would end credvault and leave the child running on its own.
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/**
 * A child ended by one of these ends credvault by the same signal, as sudo does: to whoever started
 * credvault, a request to stop was obeyed only if it died of it. bash stops a `for` loop at Ctrl-C only
 * when the command it waited for died of SIGINT (an exit status of 130 reads as a command that caught
 * the interrupt and chose to go on); systemd counts a main process killed by SIGTERM, SIGINT or SIGHUP
 * as a clean stop, and an exit status of 143 as a failure.
 *
 * Any other signal becomes 128 + its number, as a shell reports it: dying of it would say something
 * untrue about credvault. SIGSEGV, SIGABRT, SIGBUS or SIGQUIT would dump the core of the process that
 * held the vault's secrets (sudo, which re-raises every signal, turns core dumps off first: Node cannot);
 * SIGKILL would read as credvault itself killed (by the OOM killer, say). SIGPIPE (the child wrote to a
 * reader that left: `credvault exec c -- cmd | head`) stays 141, as a shell that ran the command ends:
 * bash prints nothing for a SIGPIPE death, and `set -o pipefail` and PIPESTATUS show 141 whichever way
 * credvault ends, so no pipeline gains from it; credvault never wrote to that pipe (its own EPIPE ends
 * it with 0). sudo and timeout(1) would die of it, and systemd counts a SIGPIPE death as clean: a
 * service that wants that says SuccessExitStatus=141.
 */
const ENDS_AS_THE_CHILD = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * The command could not be run: a shell's exit codes, not credvault's, since everything from the
 * command on speaks for the child (127: not found; 126: found, but it cannot be run).
 */
class CommandNotRunError extends CredvaultError {
  constructor(exitCode: 126 | 127, message: string, options?: ErrorOptions) {
    super(exitCode === 127 ? 'command_not_found' : 'command_cannot_run', message, options);
  }
}

function notFound(program: string): CommandNotRunError {
  return program.includes('/')
    ? new CommandNotRunError(127, `cannot run ${quoted(program)}: no such file`, {
        hint: 'Check the path.',
      })
    : new CommandNotRunError(127, `cannot run ${quoted(program)}: command not found`, {
        hint: "No folder in PATH has it: check the name, or give the command's path.",
      });
}

function notRunnable(program: string, why: string, hint: string): CommandNotRunError {
  return new CommandNotRunError(126, `cannot run ${quoted(program)}: ${why}`, { hint });
}

const RUNNABLE = 'Give an executable file (chmod +x FILE), or its interpreter first (sh FILE).';

/**
 * Finds PROGRAM as execvp(3) will (a path when it has a slash, else each folder of the child's PATH),
 * before any credential is read: a mistyped command costs no refresh and serves no token.
 */
function locateProgram(program: string, path: string | undefined): void {
  const candidates = program.includes('/')
    ? [program]
    : (path ?? '/usr/bin:/bin').split(':').map((dir) => join(dir || '.', program));
  let refused: string | null = null;
  for (const file of candidates) {
    try {
      if (statSync(file).isDirectory()) {
        refused ??= 'it is a folder';
        continue;
      }
      accessSync(file, fsConstants.X_OK);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EACCES') refused ??= 'permission denied (it is not executable)';
    }
  }
  throw refused ? notRunnable(program, refused, RUNNABLE) : notFound(program);
}

/** Why spawn could not start a program locateProgram found (it changed since, or its #! names none). */
function spawnFailure(program: string, path: string | undefined, error: NodeJS.ErrnoException) {
  if (error.code === 'ENOENT') {
    try {
      locateProgram(program, path);
    } catch (gone) {
      return gone as CommandNotRunError;
    }
    return notRunnable(
      program,
      'the interpreter its first line (#!) names was not found',
      'Correct its #! line, or give its interpreter first (python3 FILE).',
    );
  }
  if (error.code === 'EACCES') return notRunnable(program, 'permission denied', RUNNABLE);
  return notRunnable(program, error.code ?? error.message, RUNNABLE);
}

/**
 * Whether this process is in the foreground process group of its controlling terminal (where a
 * terminal's Ctrl-C lands): /proc/self/stat's pgrp and tpgid. Where /proc cannot tell, whether any of
 * the standard streams is a terminal.
 */
function inTerminalForeground(): boolean {
  try {
    const stat = readFileSync('/proc/self/stat', 'latin1');
    // After the command name (in parentheses, which may hold anything): state ppid pgrp session tty_nr tpgid
    const [, , pgrp, , tty, tpgid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return tty !== '0' && pgrp === tpgid;
  } catch {
    return isatty(0) || isatty(1) || isatty(2);
  }
}

/**
 * Runs COMMAND with the connection's variables; its exit code becomes credvault's, and its death by
 * one of ENDS_AS_THE_CHILD credvault's own.
 */
export async function exec(
  rt: Runtime,
  ref: string | null,
  command: string[],
  opts: { minTtl: string },
): Promise<void> {
  if (rt.io.env.CREDVAULT_EXEC !== undefined) {
    throw new InvalidInputError(
      `already inside \`credvault exec\` (CREDVAULT_EXEC=${rt.io.env.CREDVAULT_EXEC}); exec does not nest`,
      {
        hint: 'Run the inner command directly: its environment already has the variables.',
      },
    );
  }
  const [program, ...args] = command;
  // Checked before the command is looked for: a command found or not says nothing of a missing CONN.
  if (ref === null) {
    const given = command.length ? command.map(shellQuote).join(' ') : 'COMMAND [ARG]...';
    throw new InvalidInputError(
      `exec needs the connection before --, as in \`credvault exec CONN -- ${given}\``,
      { hint: 'CONN is a connection id, its name, or platform:account (`credvault connections list`).' },
    );
  }
  if (program === undefined)
    throw new InvalidInputError('exec needs a command after --', {
      hint: 'credvault exec CONN -- COMMAND [ARG]...',
    });
  if (!program)
    throw new InvalidInputError('the command given to exec is empty (an empty word after --)', {
      hint: 'credvault exec CONN -- COMMAND [ARG]...',
    });
  const minTtlSeconds = parseMinTtl(opts.minTtl);
  locateProgram(program, rt.io.env.PATH);
  const { vars, served } = await withContext(rt, (ctx) =>
    exportCredentials(ctx, ref, { minTtlSeconds, purpose: `exec ${program}` }),
  );
  const env: NodeJS.ProcessEnv = {
    ...rt.io.env,
    CREDVAULT_EXEC: served.connection.name ?? served.connection.id,
  };
  // The child gets one connection's credentials, not the variables that name the keys to the whole
  // vault. (A child running as the same user can still read a key file it finds: run a command that
  // must not reach the vault as another user.)
  for (const name of vaultSecretVariables(rt.io.env, rt.config.databaseUrl)) delete env[name];
  // Nor one the caller's environment had from another account or app (a login customer id this
  // connection has none of): the child sees this connection's variables only.
  for (const name of [...EXPORTED_VARIABLES, ...FOREIGN_VARIABLES]) delete env[name];
  for (const [name, value] of vars) env[name] = reveal(value);
  // Ctrl-C and Ctrl-\ at a terminal reach the whole foreground process group, the child with it: as
  // system(3) does, credvault then only waits for the child (sending them on would deliver each
  // twice). Otherwise (no terminal, or in the background) whoever signals credvault means the child.
  // The handlers are in place before the child starts: a signal that comes as soon as the child is
  // running (it may answer before this process runs its next line) is sent on, not taken by it.
  let child: ReturnType<typeof spawn> | null = null;
  const early: NodeJS.Signals[] = [];
  const forward = (signal: NodeJS.Signals) => {
    if ((signal === 'SIGINT' || signal === 'SIGQUIT') && inTerminalForeground()) return;
    if (child) child.kill(signal);
    else early.push(signal);
  };
  for (const signal of SIGNALS) process.on(signal, forward);
  try {
    const running = spawn(program, args, { stdio: 'inherit', env });
    child = running;
    for (const signal of early) running.kill(signal);
    const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
      (resolve, reject) => {
        running.once('error', (error: NodeJS.ErrnoException) =>
          reject(spawnFailure(program, env.PATH, error)),
        );
        running.once('exit', (code, signal) => resolve({ code, signal }));
      },
    );
    // As a shell reports a signal's end: 128 + its number (SIGSEGV 139, SIGTERM 143).
    rt.exitCode = ended.code ?? 128 + ((ended.signal && constants.signals[ended.signal]) || 1);
    if (ended.signal && (ENDS_AS_THE_CHILD as readonly string[]).includes(ended.signal)) {
      rt.exitSignal = ended.signal;
    }
  } finally {
    for (const signal of SIGNALS) process.removeListener(signal, forward);
  }
}
