import { type Command, CommanderError } from 'commander';
import { type Config, type GlobalFlags, resolveConfig } from '../config.js';
import { jsonLog, logFolders, writeStartFailure } from '../daemon/log-format.js';
import { databaseWhere } from '../db/client.js';
import { mapDatabaseError } from '../db/errors.js';
import { CredvaultError, InvalidInputError } from '../errors.js';
import { urlHasPassword } from '../util/database-url.js';
import { Output, type Stream } from './output.js';
import { buildProgram, execArgv, reachedCommand } from './program.js';

export interface Io {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: Stream;
  stderr: Stream;
  env: NodeJS.ProcessEnv;
}

/** What a command gets: configuration, the writer and the terminal. */
export interface Runtime {
  config: Config;
  out: Output;
  io: Io;
  /** A person is at a terminal and may be asked things (never under --json). */
  interactive: boolean;
  /** Set by a command whose exit code is not the contract's (exec passes its child's on). */
  exitCode?: number;
  /**
   * Set by exec when its child was killed by SIGINT, SIGTERM or SIGHUP: credvault ends by the same
   * signal (src/cli/main.ts), with exitCode (128 + its number) if it outlives it.
   */
  exitSignal?: NodeJS.Signals;
}

/** How the process is to end: with an exit code, or by a signal (the code if it outlives it). */
export interface Ending {
  code: number;
  signal?: NodeJS.Signals;
}

function where(config: Config | null): string {
  if (!config) return 'the configured database';
  return databaseWhere(config);
}

export function createRuntime(flags: GlobalFlags, io: Io): Runtime {
  // From the command line only: the library's openVault({ databaseUrl }) is in no process list.
  if (flags.databaseUrl && urlHasPassword(flags.databaseUrl)) {
    throw new InvalidInputError(
      '--database-url carries a password, which every user of this machine can read in its process list',
      {
        hint: 'Give the URL in DATABASE_URL instead, or leave the password out of it and set PGPASSWORD.',
      },
    );
  }
  const config = resolveConfig(flags, io.env);
  const out = new Output({
    json: config.json,
    color: config.color,
    verbose: config.verbose,
    stdout: io.stdout,
    stderr: io.stderr,
    keepUnder: [config.home],
  });
  const interactive = Boolean(io.stdin.isTTY && io.stderr.isTTY) && !config.json;
  return { config, out, io, interactive };
}

/**
 * Parses argv, runs the command, and turns any failure into an exit code. Never exits the process:
 * src/cli/main.ts ends it as the answer says.
 */
export async function run(given: string[], io: Io): Promise<Ending> {
  let runtime: Runtime | null = null;
  // Read when commander prints, after exec's command is told apart from credvault's words below.
  const options = { json: false };
  const program = buildProgram(
    io,
    (rt) => {
      runtime = rt;
    },
    options,
  );
  const argv = execArgv(program, given);
  // Words after `--` are operands (exec's command and its arguments): never credvault's flags.
  const own = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv;
  const flag = (name: string) => own.includes(name);
  options.json = flag('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    const rt = runtime as Runtime | null;
    const code = rt?.exitCode ?? 0;
    return rt?.exitSignal ? { code, signal: rt.exitSignal } : { code };
  } catch (error) {
    return { code: failed(error, runtime, program, argv, io, flag) };
  }
}

/** Reports what a command threw, and gives its exit code. */
function failed(
  error: unknown,
  rt: Runtime | null,
  program: Command,
  argv: string[],
  io: Io,
  flag: (name: string) => boolean,
): number {
  const out =
    rt?.out ??
    new Output({
      json: flag('--json'),
      color: !io.env.NO_COLOR && !flag('--no-color'),
      verbose: flag('--verbose'),
      stdout: io.stdout,
      stderr: io.stderr,
    });
  // `credvault daemon` whose log is JSON lines (stderr not a terminal, or --json): why it could not
  // start is one line of that log too, not plain text among them (see writeStartFailure).
  const reached = reachedCommand(program);
  const daemonLog = reached.name() === 'daemon' && reached.parent === program;
  const report =
    daemonLog && jsonLog(io.stderr, flag('--json') || undefined)
      ? (shown: unknown) => writeStartFailure(io.stderr, shown, daemonLogFolders(rt, io, argv), io.env)
      : (shown: unknown) => out.error(shown);
  if (error instanceof CommanderError) {
    // --help (and `credvault help GROUP`) print their text and succeed; everything else is bad usage.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
    // A group named without one of its commands (`credvault apps`): its help, then bad usage.
    if (error.code === 'commander.help') {
      return error.exitCode === 0 ? 0 : report(missingCommand(program, argv));
    }
    // Commander puts a suggestion on a line of its own ("(Did you mean list?)"): it is the hint.
    const [message, ...rest] = error.message.replace(/^error: /, '').split('\n');
    const hint = rest.join(' ').trim();
    return report(new InvalidInputError(message!, hint ? { hint } : {}));
  }
  if (error instanceof CredvaultError) return report(error);
  if (isPromptCancel(error)) return report(new InvalidInputError('cancelled'));
  return report(mapDatabaseError(error, where(rt?.config ?? null)) ?? error);
}

/** The folders whose paths a failed daemon start's log line keeps (logFolders): the socket's among them. */
function daemonLogFolders(rt: Runtime | null, io: Io, argv: string[]): string[] {
  const at = argv.findIndex((arg) => arg === '--listen' || arg.startsWith('--listen='));
  const listen =
    at < 0 ? undefined : argv[at]!.includes('=') ? argv[at]!.split('=').slice(1).join('=') : argv[at + 1];
  const socket = listen?.startsWith('unix:') ? listen.slice(5) : undefined;
  let config: Pick<Config, 'home' | 'env'> | null = rt?.config ?? null;
  if (!config) {
    try {
      config = resolveConfig({}, io.env);
    } catch {
      config = null;
    }
  }
  return config ? logFolders(config, socket) : [];
}

/** The group the words named (as commander reached it), and the commands it has. */
function missingCommand(program: Command, argv: string[]): InvalidInputError {
  const group = reachedCommand(program);
  // `credvault help NAME` with no such command shows the help too.
  const asked = argv.includes('help') ? argv[argv.indexOf('help') + 1] : undefined;
  if (group === program && asked) {
    return new InvalidInputError(`unknown command '${asked}'`, { hint: 'See `credvault --help`.' });
  }
  const path: string[] = [];
  for (let c: Command | null = group; c; c = c.parent) path.unshift(c.name());
  // As --help lists them: a hidden command (`__names`, for shell completion) is not offered.
  const names = group
    .createHelp()
    .visibleCommands(group)
    .map((c) => c.name())
    .filter((n) => n !== 'help');
  return new InvalidInputError(`${path.join(' ')} needs a command: ${names.join(', ')}`, {
    hint: `See \`${path.join(' ')} --help\`.`,
  });
}

function isPromptCancel(error: unknown): boolean {
  return error instanceof Error && (error.name === 'ExitPromptError' || error.name === 'AbortPromptError');
}
