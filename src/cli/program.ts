import { Command } from 'commander';
import type { GlobalFlags } from '../config.js';
import { VERSION } from '../version.js';
import { createRuntime, type Io, type Runtime } from './run.js';

/**
 * The argument parser: it normalizes flags and calls a command function. Command modules are
 * imported only when their command runs, so `token get` does not pay for `apps add`.
 */

type Handler = (rt: Runtime) => Promise<void>;

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function buildProgram(io: Io, onRuntime: (rt: Runtime) => void): Command {
  const program = new Command('credvault');

  const runWith = (command: Command, handler: Handler) => {
    const rt = createRuntime(command.optsWithGlobals() as GlobalFlags, io);
    onRuntime(rt);
    return rt.out.prepare().then(() => handler(rt));
  };

  program
    .description('An encrypted vault for ad platforms’ OAuth credentials that hands out valid access tokens.')
    .version(VERSION, '-V, --version')
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL, else the embedded database)')
    .option('--home <dir>', 'data folder (default: $CREDVAULT_HOME, else ~/.local/share/credvault)')
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
      writeErr: (text) => io.stderr.write(text),
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

  const key = program.command('key').description('the master key');
  key
    .command('generate')
    .description('print a new master key (Fernet format)')
    .action((_o, cmd: Command) =>
      runWith(cmd, async (rt) => (await import('./commands/key.js')).generate(rt)),
    );
  key
    .command('status')
    .description('which key is in use, and the data keys it protects')
    .action((_o, cmd: Command) => runWith(cmd, async (rt) => (await import('./commands/key.js')).status(rt)));

  const audit = program.command('audit').description('the audit log');
  audit
    .command('list')
    .description('list audit records, newest first')
    .option('--connection <conn>', 'only this connection')
    .option('--actor <actor>', 'only this actor')
    .option('--since <when>', 'only after this time (ISO 8601, or a duration such as 24h or 7d)')
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
  return program;
}
