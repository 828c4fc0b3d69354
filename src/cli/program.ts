import { Command } from 'commander';
import type { GlobalFlags } from '../config.js';
import { VERSION } from '../version.js';
import { createRuntime, type Io, type Runtime } from './run.js';

/**
 * The argument parser: it normalizes flags and calls a command function. Command modules are
 * imported only when their command runs, so `token get` does not pay for `apps add`.
 */

type Handler = (rt: Runtime) => Promise<void>;

const reached = new WeakMap<Command, Command>();

/** The deepest command `program` dispatched to while parsing (itself when none). */
export function reachedCommand(program: Command): Command {
  return reached.get(program) ?? program;
}

/** Whether `arg` is one of `command`'s options that takes its value from the next word. */
function takesNextWord(command: Command, arg: string): boolean {
  if (!arg.startsWith('-') || arg.includes('=')) return false;
  const option = command.options.find((o) => o.long === arg || o.short === arg);
  return Boolean(option && (option.required || option.optional));
}

/** Where `exec`'s own words start in argv (after the program's options and `exec`); null: not an exec. */
function execWords(program: Command, argv: string[]): { command: Command; from: number } | null {
  const command = program.commands.find((c) => c.name() === 'exec');
  if (!command) return null;
  let i = 0;
  // The program's own options, up to the command's name.
  for (; i < argv.length && argv[i] !== '--' && argv[i]!.startsWith('-'); i++) {
    if (takesNextWord(program, argv[i]!)) i++;
  }
  return argv[i] === 'exec' ? { command, from: i + 1 } : null;
}

/**
 * Whether an exec's argv (as execArgv left it) has a word before `--` that is not an option: the
 * connection. `exec -- python3 report.py` has none, and the parser would take `python3` for it.
 */
export function execConnectionGiven(program: Command, argv: string[]): boolean {
  const exec = execWords(program, argv);
  if (!exec) return true;
  for (let i = exec.from; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return false;
    if (!arg.startsWith('-') || arg === '-') return true;
    if (takesNextWord(exec.command, arg) || takesNextWord(program, arg)) i++;
  }
  return true;
}

/**
 * `exec CONN COMMAND ARG…` read as `exec CONN -- COMMAND ARG…`: everything from the command on is the
 * command's, as sudo, env and aws-vault read it. Left to the parser, a flag of the command's that
 * credvault also has was taken as credvault's (`exec CONN psql --home X`, `… --json`), any other
 * was refused (`exec CONN ls -la`), and a `--` among the command's arguments was dropped. Nothing
 * changes for argv that already has `--` before the command, or is not an exec.
 */
export function execArgv(program: Command, argv: string[]): string[] {
  const exec = execWords(program, argv);
  if (!exec) return argv;
  let operands = 0;
  for (let i = exec.from; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return argv;
    if (arg.startsWith('-') && arg !== '-') {
      if (takesNextWord(exec.command, arg) || takesNextWord(program, arg)) i++;
      continue;
    }
    // The first word is CONN; the second is the command.
    if (++operands === 2) return [...argv.slice(0, i), '--', ...argv.slice(i)];
  }
  return argv;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function buildProgram(
  io: Io,
  onRuntime: (rt: Runtime) => void,
  options: { json?: boolean } = {},
): Command {
  const program = new Command('credvault');

  // `plain`: the command prints data, never a table or colours (`token get`, `exec`): it does not
  // wait for chalk and cli-table3 to load.
  const runWith = (command: Command, handler: Handler, plain = false) => {
    const rt = createRuntime(command.optsWithGlobals() as GlobalFlags, io);
    onRuntime(rt);
    return plain ? handler(rt) : rt.out.prepare().then(() => handler(rt));
  };

  program
    .description('An encrypted vault for ad platforms’ OAuth credentials that hands out valid access tokens.')
    .version(VERSION, '-V, --version')
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL, else the embedded database)')
    .option(
      '--home <dir>',
      'data folder (default: $CREDVAULT_HOME, else $XDG_DATA_HOME/credvault, else ~/.local/share/credvault)',
    )
    .option(
      '--actor <name>',
      'who is acting, for the audit log (default: $CREDVAULT_ACTOR, else the OS user)',
    )
    .option('--no-color', 'plain output (also NO_COLOR)')
    .option('--json', 'machine output: one JSON document on stdout, errors as JSON on stderr')
    .option('--verbose', 'show stack traces of unexpected failures (also CREDVAULT_DEBUG=1)')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      // Help shown for a missing command goes to stderr, except under --json: there stderr holds the
      // contract's one JSON error (run() writes it).
      writeErr: (text) => {
        if (!options.json) io.stderr.write(text);
      },
      // Usage errors are printed by run() in the contract's format (JSON under --json).
      outputError: () => {},
    });

  program
    .command('init')
    .description('make the data folder and key (if none is configured), migrate, seed platforms; idempotent')
    .action((_opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/init.js')).init(rt)),
    );

  const db = program.command('db').description('database migrations');
  db.command('migrate')
    .description('apply pending migrations')
    .action((_o, cmd: Command) => runWith(cmd, async (rt) => (await import('./commands/db.js')).migrate(rt)));
  db.command('status')
    .description('show applied and pending migrations')
    .action((_o, cmd: Command) => runWith(cmd, async (rt) => (await import('./commands/db.js')).status(rt)));

  const platforms = program.command('platforms').description('the ad platforms credvault speaks to');
  platforms
    .command('seed')
    .description('write the platforms and their capabilities into the database')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/platforms.js')).seed(rt)),
    );
  platforms
    .command('list')
    .description('list platforms')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/platforms.js')).list(rt)),
    );
  platforms
    .command('show <platform>')
    .description("show a platform's capabilities")
    .action((platform: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/platforms.js')).show(rt, platform)),
    );

  const apps = program.command('apps').description('OAuth applications registered with the platforms');
  const appFlags = (command: Command) =>
    command
      .option('--label <label>', 'a name for the app, unique per platform')
      .option('--client-id <id>', 'OAuth client id')
      .option('--redirect-uri <uri>', 'redirect URI registered with the platform')
      .option('--scope <scope>', 'OAuth scope (repeat for several; default: the platform’s)', collect)
      .option('--login-customer-id <id>', 'Google Ads manager account id (10 digits)')
      .option('--user-agent <ua>', 'User-Agent for Reddit (default: credvault:<client id>:v1)')
      .option('--api-version <version>', 'platform API version (default: the current one)')
      .option('--authorize-url <url>', 'override the authorization endpoint')
      .option('--token-url <url>', 'override the token endpoint')
      .option('--revoke-url <url>', 'override the revocation endpoint')
      .option('--api-base-url <url>', 'override the API base URL')
      .option(
        '--from-file <file>',
        'JSON with the fields above in snake_case plus client_secret and developer_token ("-": stdin)',
      );
  appFlags(
    apps
      .command('add <platform>')
      .description('register an OAuth app (secrets from a prompt or --from-file)'),
  ).action((platform: string, opts, cmd: Command) =>
    runWith(cmd, async (rt) => (await import('./commands/apps.js')).add(rt, platform, opts)),
  );
  apps
    .command('list')
    .description('list apps')
    .option('--platform <platform>', 'only this platform')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).list(rt, opts)),
    );
  apps
    .command('show <app>')
    .description('show an app (never its secrets)')
    .action((ref: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).show(rt, ref)),
    );
  appFlags(apps.command('update <app>').description('change an app'))
    .option('--new-client-secret', 'replace the client secret (asked for, or one line on stdin)')
    .option('--new-developer-token', 'replace the developer token (asked for, or one line on stdin)')
    .option('--clear-developer-token', 'remove the developer token')
    .option('--force', 'change the client id although connections hold tokens issued to the old one')
    .action((ref: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).update(rt, ref, opts)),
    );
  apps
    .command('disable <app>')
    .description('stop new connections and refreshes through this app')
    .action((ref: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).setEnabled(rt, ref, false)),
    );
  apps
    .command('enable <app>')
    .description('allow a disabled app again')
    .action((ref: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).setEnabled(rt, ref, true)),
    );
  apps
    .command('remove <app>')
    .description('delete an app (refused while connections use it, unless --force)')
    .option('--force', 'also delete its connections and their tokens')
    .action((ref: string, opts: { force?: boolean }, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/apps.js')).remove(rt, ref, opts.force === true)),
    );

  program
    .command('connect <platform>')
    .description('connect ad accounts through the OAuth flow in a browser')
    .option('--app <app>', "the app to connect through (default: the platform's only app)")
    .option('--account <id>', 'the ad account to connect (repeat for several; default: ask)', collect, [])
    .option('--name <name>', 'a name for the connection (one account only)')
    .option('--no-browser', 'only print the authorization URL (on stderr), for another machine or a script')
    .option('--timeout <seconds>', 'how long to wait for the browser', '300')
    .action((platform: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connect.js')).connect(rt, platform, opts)),
    );

  const connections = program.command('connections').description('connected ad accounts');
  connections
    .command('start <platform>')
    .description('begin an authorization and print its URL and state (for scripted or remote flows)')
    .option('--app <app>', 'the app to connect through')
    .action((platform: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connect.js')).start(rt, platform, opts)),
    );
  connections
    .command('complete')
    .description('finish an authorization begun with `connections start`')
    .requiredOption('--state <state>', 'the state `connections start` printed')
    .option('--code <code>', 'the authorization code')
    .option('--callback-url <url>', 'the whole URL the browser was sent back to')
    .option('--account <id>', 'the ad account to connect (repeat for several)', collect, [])
    .option('--name <name>', 'a name for the connection (one account only)')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connect.js')).complete(rt, opts)),
    );
  connections
    .command('add <platform>')
    .description('adopt an existing refresh token (refreshed once before it is stored)')
    .requiredOption('--app <app>', 'the app the refresh token was issued to')
    .option('--account <id>', 'the ad account (repeat for several)', collect, [])
    .option('--name <name>', 'a name for the connection (one account only)')
    .requiredOption('--refresh-token-file <file>', 'a file holding the refresh token ("-": standard input)')
    .action((platform: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connect.js')).add(rt, platform, opts)),
    );
  connections
    .command('list')
    .description('list connections')
    .option('--platform <platform>', 'only this platform')
    .option('--status <status>', 'only this status: active, needs_reauth, error, revoked')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connections.js')).list(rt, opts)),
    );
  connections
    .command('show <conn>')
    .description('show a connection (never its tokens)')
    .action((ref: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connections.js')).show(rt, ref)),
    );
  connections
    .command('rename <conn> <name>')
    .description('give a connection a name (usable as CONN everywhere)')
    .action((ref: string, name: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connections.js')).rename(rt, ref, name)),
    );
  connections
    .command('refresh <conn>')
    .description('refresh now, whatever time is left')
    .option('--force', 'also try a connection that is in error or cooling down')
    .action((ref: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connections.js')).refresh(rt, ref, opts)),
    );
  connections
    .command('revoke <conn>')
    .description("revoke at the platform (where it can) and destroy the connection's tokens")
    .option('--force', 'destroy the tokens here even when the platform cannot be reached to be told')
    .action((ref: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/connections.js')).revoke(rt, ref, opts)),
    );

  const token = program.command('token').description('access tokens');
  token
    .command('get <conn>')
    .description('print a valid access token, refreshing first if it expires within --min-ttl')
    .option('--min-ttl <seconds>', 'refresh first if the token expires within this many seconds', '60')
    .option('--format <format>', 'raw, json, header, env or google-ads-yaml (default: raw; json with --json)')
    .action((ref: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/token.js')).get(rt, ref, opts), true),
    );

  // [command...]: exec itself says what is missing, and how to give it.
  program
    .command('exec <conn> [command...]')
    .description("run COMMAND with the connection's token and variables in its environment")
    .usage('<conn> [--min-ttl SECONDS] -- <command> [args...]')
    .option('--min-ttl <seconds>', 'refresh first if the token expires within this many seconds', '60')
    .action((ref: string, command: string[], opts, cmd: Command) => {
      // Whether `ref` came before `--`: the parser does not say (nor keep the `--`), the words it was
      // given do (commander keeps them as rawArgs). Without it, ref is the command's first word.
      const argv = (program as Command & { rawArgs?: string[] }).rawArgs ?? [];
      const words = execConnectionGiven(program, argv)
        ? { ref, command }
        : { ref: null, command: [ref, ...command] };
      return runWith(
        cmd,
        async (rt) => (await import('./commands/token.js')).exec(rt, words.ref, words.command, opts),
        true,
      );
    });

  program
    .command('status')
    .description('connections, expiry and health at a glance, with what to do next')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/status.js')).status(rt)),
    );

  program
    .command('doctor')
    .description('check the key, the database, its migrations and the daemon; say what to do about each')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/doctor.js')).doctor(rt)),
    );

  const clients = program.command('clients').description("clients of the daemon's token endpoint");
  clients
    .command('create <name>')
    .description('make a client token (shown once; only its hash is kept)')
    .option('--connection <conn>', 'a connection it may read (repeat for several)', collect, [])
    .option('--platform <platform>', 'every connection of a platform (repeat for several)', collect, [])
    .option('--all', 'every connection')
    .option('--role <role>', 'reader, operator or admin', 'reader')
    .option('--expires-in <duration>', 'expire after this long (90s, 30m, 12h, 7d)')
    .action((name: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/clients.js')).create(rt, name, opts)),
    );
  clients
    .command('list')
    .description('list clients (never their tokens)')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/clients.js')).list(rt)),
    );
  clients
    .command('revoke <name>')
    .description('revoke a client: its token stops working at once')
    .action((name: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/clients.js')).revoke(rt, name)),
    );

  const daemon = program
    .command('daemon')
    .description('keep tokens fresh in the background and serve them on a local endpoint')
    .option('--listen <address>', 'HOST:PORT or unix:PATH', '127.0.0.1:8787')
    .option('--refresh-window <duration>', 'refresh tokens expiring within this long', '30m')
    .option('--interval <duration>', 'the longest sleep between sweeps', '10m')
    .option('--concurrency <n>', 'refresh calls to the platforms at once', '8')
    .option(
      '--allowed-host <host>',
      'a Host header to accept besides loopback (repeat for several)',
      collect,
      [],
    )
    .option('--allow-remote', 'allow a non-loopback --listen (put TLS in front of it)')
    .option('--public-callback-url <url>', "the OAuth callback URL that reaches this daemon's callback route")
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/daemon.js')).daemon(rt, opts)),
    );
  daemon
    .command('unit')
    .description('print a hardened systemd unit for the daemon')
    .option('--user <user>', 'run as this user (default: a dynamic user)')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/daemon.js')).unit(rt, opts)),
    );

  const key = program.command('key').description('the master key');
  key
    .command('generate')
    .description('print a new master key (Fernet format)')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/key.js')).generate(rt)),
    );
  key
    .command('rotate')
    .description(
      're-wrap every data key with a new master key (or a KMS); --reencrypt also renews every data key',
    )
    .option('--new-key-file <file>', 'the new master key ("-": standard input); default: make one')
    .option('--to-kms <uri>', 'move to a KMS: aws-kms://…, gcp-kms://…, vault-transit://…')
    .option('--reencrypt', 'also re-encrypt every secret under new data keys (resumable)')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/key.js')).rotate(rt, opts)),
    );
  key
    .command('status')
    .description('which key is in use, and the data keys it protects')
    .action((_o, cmd: Command) => runWith(cmd, async (rt) => (await import('./commands/key.js')).status(rt)));

  const imports = program
    .command('import')
    .description('bring credentials in from .env files and google-ads.yaml');
  imports
    .command('env')
    .description('import apps and connections from a .env file (the variable names ad-ops code uses)')
    .option('--file <path>', 'the .env file ("-": standard input)', '.env')
    .option('--dry-run', 'show what would be created, updated or left alone; write nothing')
    .option('--verify', 'then refresh each imported connection and report which ones work')
    .action((opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/import.js')).env(rt, opts)),
    );
  imports
    .command('google-ads-yaml <file>')
    .description("import a Google Ads app and connection from the official client library's google-ads.yaml")
    .option('--dry-run', 'show what would be created, updated or left alone; write nothing')
    .option('--verify', 'then refresh the imported connection and report whether it works')
    .action((file: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/import.js')).googleAdsYaml(rt, file, opts)),
    );

  const campaigns = program
    .command('campaigns')
    .description("a connection's campaigns, and their daily budgets");
  campaigns
    .command('list <conn>')
    .description('list campaigns: id, name, status, daily budget in the account currency, shared or not')
    .action((ref: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/campaigns.js')).list(rt, ref)),
    );
  campaigns
    .command('set-budget <conn> <campaign>')
    .description("set a campaign's daily budget (shows old → new and asks first on a terminal)")
    .option('--daily <amount>', 'the new daily budget in the account currency, for example 75.50')
    .option('--validate-only', "check it (the platform's dry run, or credvault's checks where it has none)")
    .option('--yes', 'do not ask for confirmation')
    .option('--shared', 'allow changing a budget other campaigns share (Google Ads)')
    .action((ref: string, campaign: string, opts, cmd: Command) =>
      runWith(cmd, async (rt) =>
        (await import('./commands/campaigns.js')).setBudget(rt, ref, campaign, opts),
      ),
    );

  const audit = program.command('audit').description('the audit log');
  audit
    .command('list')
    .description('list audit records, newest first')
    .option('--connection <conn>', 'only this connection')
    .option('--actor <actor>', 'only this actor')
    .option('--action <action>', 'only this action (token.serve), or a group of them (token.*)')
    .option('--outcome <outcome>', 'only this outcome: success, failure or denied')
    .option('--since <when>', 'only from this time (ISO 8601, or a duration back such as 24h or 7d)')
    .option('--until <when>', 'only before this time (ISO 8601, or a duration back such as 1h)')
    .option('--limit <n>', 'at most this many rows', '50')
    .action((opts, cmd: Command) =>
      // The program's global --actor (who is acting) claims the flag; `audit list` writes nothing, so
      // here it can only mean the filter.
      runWith(cmd, async (rt) =>
        (await import('./commands/audit.js')).list(rt, {
          ...opts,
          actor: opts.actor ?? program.opts().actor,
        }),
      ),
    );
  audit
    .command('verify')
    .description('check the hash chain for edited or deleted rows')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/audit.js')).verify(rt)),
    );

  program
    .command('completion')
    .description('print a shell completion script')
    .addArgument(
      new Command().createArgument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']),
    )
    .action((shell: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/completion.js')).completion(rt, shell, program)),
    );
  // What the completion scripts call for the names of connections, apps and clients (not in --help).
  program
    .command('__names <kind>', { hidden: true })
    .action((kind: string, _o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/names.js')).names(rt, kind)),
    );
  // Which group the words named, for `credvault --home X apps` with no command after it.
  const track = (group: Command) => {
    if (!group.commands.length) return;
    group.hook('preSubcommand', (_group, sub) => {
      reached.set(program, sub);
    });
    group.commands.forEach(track);
  };
  track(program);
  return program;
}
