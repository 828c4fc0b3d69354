import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { relative } from '../../src/cli/commands/connections.js';
import {
  type GoogleDouble,
  MICROSOFT_ADS_SCOPE,
  type MicrosoftDouble,
  startGoogleDouble,
  startMicrosoftDouble,
} from '../doubles/index.js';
import { addAppFor, adoptGrant } from '../helpers/flows.js';
import { BIN } from '../helpers/paths.js';
import { ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

/**
 * `exec`, `status` and `doctor` as an operator at a terminal or a CI job uses them: the exit codes a
 * shell gives, the child's arguments and environment as given, signals that reach the child, advice
 * whose commands work when pasted, and fixes that name the real remedy.
 */

const vault = vaultsPerTest();
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** A vault with one connection named `acct`, adopted from a grant the double issued. */
async function connected(platform: 'google_ads' | 'microsoft_ads') {
  const double: GoogleDouble | MicrosoftDouble =
    platform === 'google_ads' ? await startGoogleDouble() : await startMicrosoftDouble();
  cleanups.push(() => double.close());
  const v = await vault();
  const app = await addAppFor(v, platform, double as never);
  const grant = double.issueGrant({
    clientId: app.clientId,
    scope:
      platform === 'google_ads'
        ? 'https://www.googleapis.com/auth/adwords'
        : `${MICROSOFT_ADS_SCOPE} offline_access`,
  } as never);
  const account = platform === 'google_ads' ? '1234567890' : '987';
  await adoptGrant(v, platform, app.label, grant.refreshToken, { accounts: [account], name: 'acct' });
  return { v, double };
}

// What exec does with its words, its child and the signals it gets: once (the database only serves
// the token, as every test on both has it do).
describe.runIf(ONCE)('exec', () => {
  it('a command that cannot be run exits as a shell says it (127 not found, 126 not runnable), before any token is served', async () => {
    const { v } = await connected('microsoft_ads');
    const missing = await v.cli(['exec', 'acct', '--', 'no-such-command-credvault-test']);
    expect(missing.code, missing.stderr).toBe(127);
    expect(missing.stderr).toContain('command not found');
    // Under --json with an error code of its own, as the exit code is (not_found would say 3).
    const asJson = await v.cli(['exec', 'acct', '--json', '--', 'no-such-command-credvault-test']);
    expect(asJson.code).toBe(127);
    expect(JSON.parse(asJson.stderr).error.code).toBe('command_not_found');
    const script = join(v.root, 'report.sh');
    writeFileSync(script, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    const notExecutable = await v.cli(['exec', 'acct', '--', script]);
    expect(notExecutable.code, notExecutable.stderr).toBe(126);
    expect(notExecutable.stderr).toContain('permission denied');
    expect(notExecutable.stderr).toContain('chmod +x');
    const folder = await v.cli(['exec', 'acct', '--', v.root]);
    expect(folder.code, folder.stderr).toBe(126);
    // Nothing was refreshed, served or exported for commands that never ran.
    const served = await v.sql<{ n: number }>(
      "select count(*)::int as n from credential_access_audit where detail::text like '%exec %'",
    );
    expect(served[0]!.n).toBe(0);
  });

  it("exec with the connection forgotten before -- says so (exit 2), not that the command's second word cannot be run; an empty command is called empty", async () => {
    const v = await vault();
    writeFileSync(join(v.root, 'report.py'), 'print("hi")\n');
    // Before: `python3` was taken for the connection, and "cannot run \"report.py\"", exit 127.
    const forgot = await v.cli(['exec', '--', 'python3', 'report.py']);
    expect(forgot.code, forgot.stderr).toBe(2);
    expect(forgot.stderr).toContain(
      'exec needs the connection before --, as in `credvault exec CONN -- python3 report.py`',
    );
    expect(forgot.stderr).not.toContain('cannot run');
    const asJson = await v.cli(['exec', '--json', '--', 'ls', '-l']);
    expect(asJson.code, asJson.stderr).toBe(2);
    expect(JSON.parse(asJson.stderr).error).toMatchObject({
      code: 'invalid_input',
      message: expect.stringContaining('`credvault exec CONN -- ls -l`'),
    });
    // A command was given after --, an empty one: not "needs a command".
    const empty = await v.cli(['exec', 'acct', '--', '']);
    expect(empty.code, empty.stderr).toBe(2);
    expect(empty.stderr).toContain('the command given to exec is empty');
  });

  it("everything from the command on is the command's, with or without --; the child has this connection's variables only", async () => {
    const { v } = await connected('google_ads');
    // Without --: flags that credvault has too (--min-ttl, --json, --home) and a -- of the command's
    // own reach the command as given. The caller's login customer id (another account's) does not.
    const args = ['sh', '-c', 'printf "%s|" "$@"; echo "login=$GOOGLE_ADS_LOGIN_CUSTOMER_ID"', 'sh'];
    const ran = await v.cli(
      ['exec', 'acct', ...args, '--min-ttl', '5', '--json', '--home', '/x', '--', '-la'],
      {
        env: { GOOGLE_ADS_LOGIN_CUSTOMER_ID: '1112223334' },
        secretOutput: true,
      },
    );
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toBe('--min-ttl|5|--json|--home|/x|--|-la|login=\n');
    // A flag only the command knows, without --: the command's, not refused as credvault's.
    const listed = await v.cli(['exec', 'acct', 'ls', '-d', v.root]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toBe(`${v.root}\n`);
    // The child's --json is not credvault's: a refusal of credvault's own words stays plain text.
    const refused = await v.cli(['exec', 'acct', '--bogus', '--', 'tool', '--json']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^error: unknown option '--bogus'/);
  });

  it('SIGUSR1 and SIGUSR2 sent to credvault reach the child, and credvault exits after it with its code', async () => {
    const { v } = await connected('microsoft_ads');
    // The child counts USR1 and ends on USR2 with 40 + the count (9 if nothing comes in 10 s).
    const child = v.spawn([
      'exec',
      'acct',
      '--',
      'sh',
      '-c',
      "n=0; trap 'n=$((n+1)); echo usr1' USR1; trap 'exit $((40+n))' USR2; echo ready; i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 9",
    ]);
    child.stdin!.end();
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<[number | null, string | null]>((resolve) =>
      child.on('close', (code, signal) => resolve([code, signal])),
    );
    cleanups.push(async () => child.kill('SIGKILL'));
    let ended = false;
    void exited.then(() => {
      ended = true;
    });
    // Whether the child printed `text` before credvault ended (the child ends by itself after 10 s).
    const printed = async (text: string) => {
      await until(() => out.includes(text) || ended, { intervalMs: 20 });
      return out.includes(text);
    };
    expect(await printed('ready'), err).toBe(true);
    child.kill('SIGUSR1');
    expect(await printed('usr1'), `the child did not get SIGUSR1: ${err}`).toBe(true);
    child.kill('SIGUSR2');
    expect(await exited, err).toEqual([41, null]);
    // Node's debugger never opened in the process that holds the vault's key.
    expect(err).not.toContain('Debugger');
  });

  it('a child killed by SIGINT, SIGTERM or SIGHUP ends credvault by the same signal; any other by exit 128 + its number, credvault dumping no core', async () => {
    const { v } = await connected('microsoft_ads');
    const killedBy = (signal: string) => v.cli(['exec', 'acct', '--', 'sh', '-c', `kill -${signal} $$`]);
    // What a shell or systemd reads as a request to stop that was obeyed: a death by it, not 130/143/129.
    for (const signal of ['INT', 'TERM', 'HUP']) {
      const ended = await killedBy(signal);
      expect(ended.signal, `SIG${signal}: exit ${ended.code} ${ended.stderr}`).toBe(`SIG${signal}`);
      expect(ended.stderr).toBe('');
    }
    // A crash and a quit would dump credvault's core (the process that held the secrets); a broken
    // pipe is told as a shell tells it too. An exit code, not a death: no core.
    for (const [signal, code] of [
      ['SEGV', 139],
      ['QUIT', 131],
      ['PIPE', 141],
    ] as const) {
      const ended = await killedBy(signal);
      expect([ended.code, ended.signal], `SIG${signal}: ${ended.stderr}`).toEqual([code, undefined]);
    }
  });

  it('a bash loop over exec stops at Ctrl-C, as one over the command itself does', async () => {
    const { v } = await connected('microsoft_ads');
    // A script at a terminal: Ctrl-C reaches bash with its command. bash gives up the loop (and dies
    // of SIGINT itself) only when the command it waited for died of SIGINT; one that exited, even
    // with 130, caught the interrupt and chose to go on ("wait and cooperative exit").
    const script = await bash(
      v,
      `for i in 1 2 3; do credvault exec acct -- sh -c 'echo ready; exec sleep 30'; echo "next $i"; done; echo done`,
      true,
    );
    expect(script.out, script.err).toBe('ready\n');
    expect([script.code, script.signal]).toEqual([null, 'SIGINT']);

    // A shell with job control (an interactive one; `set -m` here) sends no SIGINT to itself: Ctrl-C
    // reaches the job alone, and bash breaks the loop when the job died of SIGINT.
    const jobs = await bash(
      v,
      `set -m; for i in 1 2 3; do credvault exec acct -- sh -c 'kill -INT $$'; echo "next $i"; done; echo done`,
    );
    expect(jobs.out, jobs.err).toBe('');
    expect(jobs.code).toBe(130);

    // Without job control, bash does not see a SIGINT it was not sent: the loop goes on, as it does
    // over `sh -c 'kill -INT $$'` itself. (credvault changes nothing in what bash decides.)
    const bare = await bash(v, `for i in 1 2; do sh -c 'kill -INT $$'; echo "next $i"; done; echo done`);
    const wrapped = await bash(
      v,
      `for i in 1 2; do credvault exec acct -- sh -c 'kill -INT $$'; echo "next $i"; done; echo done`,
    );
    expect(bare.out).toBe('next 1\nnext 2\ndone\n');
    expect(wrapped.out, wrapped.err).toBe(bare.out);
  });
});

/**
 * Runs SCRIPT with bash -c, not interactive, in a process group of its own and without a terminal (as
 * a CI job runs it); `credvault` in it is the built binary, run with the vault's environment. With
 * `interrupt`, once the script printed `ready`, SIGINT goes to the whole group: what a terminal's Ctrl-C
 * does to the foreground group (the shell with its command). What bash printed, and how it ended (a
 * bash still running 10 s after the interrupt is killed: SIGKILL).
 */
async function bash(v: TestVault, script: string, interrupt = false) {
  const credvault = `'${process.execPath}' '${BIN}'`;
  const shell = spawn('bash', ['-c', script.replaceAll('credvault ', `${credvault} `)], {
    env: { ...v.env } as NodeJS.ProcessEnv,
    cwd: v.root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const group = shell.pid!;
  const kill = (signal: NodeJS.Signals) => {
    try {
      process.kill(-group, signal);
    } catch {}
  };
  cleanups.push(async () => kill('SIGKILL'));
  let out = '';
  let err = '';
  shell.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  shell.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    shell.on('close', (code, signal) => resolve({ code, signal })),
  );
  if (interrupt) {
    await until(() => out.includes('ready'), { intervalMs: 20 });
    expect(out, err).toContain('ready');
    kill('SIGINT');
    setTimeout(() => kill('SIGKILL'), 10_000).unref();
  }
  return { ...(await ended), out, err };
}

/** The action's first command, as an operator pastes it (`credvault` and the words after it). */
function firstCommand(action: string): string[] {
  const words = /^credvault ([^;(]+?)(?: to find out| \(|;|$)/.exec(action)?.[1];
  if (!words) throw new Error(`no command at the start of: ${action}`);
  return words.split(' ');
}

describe.runIf(ONCE)('status', () => {
  it('the command it suggests works: --force in a cool-down, a refresh for a refresh token ending from disuse', async () => {
    const { v } = await connected('microsoft_ads');
    const statusOf = async () =>
      (await v.json<{ connections: Array<{ urgency: string; problem: string; action: string }> }>(['status']))
        .connections[0]!;

    // A refresh whose answer was never recorded, during a cool-down after a failure.
    await v.sql(
      `update oauth_tokens_vault set refresh_in_flight_since = now() - interval '1 hour',
         lease_expires_at = now() - interval '50 minutes', cooldown_until = now() + interval '5 minutes',
         last_error_code = 'unavailable', last_error_message = 'HTTP 503', last_error_at = now()`,
    );
    const inDoubt = await statusOf();
    expect(inDoubt.problem).toContain('never recorded its answer');
    expect(firstCommand(inDoubt.action)).toEqual(['connections', 'refresh', 'acct', '--force']);
    const recovered = await v.cli(firstCommand(inDoubt.action));
    expect(recovered.code, recovered.stderr).toBe(0);

    // Microsoft's refresh token ends after 90 unused days: a refresh moves the end, no person needed.
    await v.sql("update oauth_tokens_vault set refresh_token_expires_at = now() + interval '2 days'");
    const idle = await statusOf();
    expect(idle.urgency).toBe('critical');
    expect(idle.problem).toContain('unless it is used before then');
    expect(firstCommand(idle.action)).toEqual(['connections', 'refresh', 'acct']);
    const renewed = await v.json<{ refresh_token_expires_at: string }>(firstCommand(idle.action));
    expect(Date.parse(renewed.refresh_token_expires_at) - Date.now()).toBeGreaterThan(80 * 86_400_000);
  });

  it('a connection whose app is disabled is flagged with `apps enable`, by status and by doctor', async () => {
    const { v } = await connected('microsoft_ads');
    type Status = {
      summary: { warning: number; critical: number };
      connections: Array<{
        app_label: string;
        app_enabled: boolean;
        urgency: string;
        problem: string;
        action: string;
      }>;
    };
    const before = (await v.json<Status>(['status'])).connections[0]!;
    expect(before.urgency).toBe('ok');
    const app = `microsoft_ads/${before.app_label}`;
    expect((await v.cli(['apps', 'disable', app])).code).toBe(0);

    // Refreshes and campaign commands are refused now: status says so, with the command that undoes it.
    const refused = await v.cli(['connections', 'refresh', 'acct']);
    expect(refused.code).toBe(7);
    const disabled = await v.json<Status>(['status']);
    expect(disabled.connections[0]!.problem).toBe(
      `app ${app} is disabled: its tokens cannot be renewed, and campaign commands and refreshes are refused`,
    );
    expect(disabled.connections[0]!.action).toBe(`credvault apps enable ${app}`);
    expect(disabled.summary.warning).toBe(1);
    expect(disabled.connections[0]).toMatchObject({ urgency: 'warning', app_enabled: false });
    expect(before.app_enabled).toBe(true);
    const table = await v.cli(['status']);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(`! acct: app ${app} is disabled`);
    // Once the access token has ended, nothing serves it: a person is needed now.
    await v.sql("update oauth_tokens_vault set access_token_expires_at = now() - interval '1 minute'");
    const expired = (await v.json<Status>(['status'])).connections[0]!;
    expect(expired.urgency).toBe('critical');
    expect(expired.problem).toContain('its access token expired');

    const doctor = await v.cli(['doctor', '--json']);
    expect(doctor.code, doctor.stderr).toBe(0);
    const checks = (
      JSON.parse(doctor.stdout) as {
        checks: Array<{ name: string; status: string; message: string; fix: string }>;
      }
    ).checks;
    const apps = checks.find((c) => c.name === 'apps')!;
    expect(apps.status).toBe('warning');
    expect(apps.message).toContain(
      `${app} is disabled, but 1 connection on it holds tokens that nothing can renew`,
    );
    expect(apps.fix).toContain(`\`credvault apps enable ${app}\``);
    expect(checks.find((c) => c.name === 'connections')!.status).toBe('warning');

    // The advice, pasted, works: the connection refreshes again and both are quiet.
    expect((await v.cli(firstCommand(disabled.connections[0]!.action))).code).toBe(0);
    expect((await v.cli(['connections', 'refresh', 'acct'])).code).toBe(0);
    expect((await v.json<Status>(['status'])).connections[0]!.urgency).toBe('ok');
    const after = JSON.parse((await v.cli(['doctor', '--json'])).stdout) as {
      checks: Array<{ name: string; status: string }>;
    };
    expect(after.checks.find((c) => c.name === 'apps')!.status).toBe('ok');
  });

  it('a time a moment ago reads "0s ago", not "in 0s"', () => {
    const now = Date.now();
    expect(relative(new Date(now - 400), now)).toBe('0s ago');
    expect(relative(new Date(now + 400), now)).toBe('in 0s');
    expect(relative(new Date(now - 5 * 60_000), now)).toBe('5m ago');
  });
});

describe.runIf(ONCE)('doctor', () => {
  it('names fixes that work: the vault’s own key for a malformed one, a quoted chmod for a key file in a folder with a space', async () => {
    const v = await vault();
    const doctor = async (env: Record<string, string>) => {
      const result = await v.cli(['doctor', '--json'], { env });
      const report = JSON.parse(result.stdout) as {
        checks: Array<{ name: string; status: string; fix: string | null }>;
      };
      return { code: result.code, key: report.checks.find((c) => c.name === 'key')! };
    };
    // A key cut short: a new key would not open this vault, the one it was made with would.
    const malformed = await doctor({ CREDENTIAL_MASTER_KEY: 'c2hvcnQ=' });
    expect(malformed.code).toBe(6);
    expect(malformed.key.status).toBe('failed');
    expect(malformed.key.fix).toContain('the key this vault was made with');

    const folder = join(v.root, 'key store');
    mkdirSync(folder);
    const file = join(folder, 'master.key');
    copyFileSync(join(v.home, 'master.key'), file);
    chmodSync(file, 0o644);
    const open = await doctor({ CREDENTIAL_MASTER_KEY_FILE: file });
    expect(open.code).toBe(6);
    expect(open.key.fix).toBe(`chmod 600 '${file}'`);
    // The fix as pasted into a shell.
    execFileSync('sh', ['-c', open.key.fix!]);
    const fixed = await doctor({ CREDENTIAL_MASTER_KEY_FILE: file });
    expect(fixed.code).toBe(0);
    expect(fixed.key.status).toBe('ok');
  });
});
