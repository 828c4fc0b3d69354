// `credvault token get` on a valid token against bare `node -e 0`, median wall time, on PostgreSQL
// and on the embedded database. The token comes from the Google Ads double, adopted once.
import { spawn } from 'node:child_process';
import { startGoogleDouble } from '../test/doubles/index.js';
import { BIN, medianRun, ratio, scratchDatabase, scratchHome } from './lib.js';

/** Runs credvault without blocking this process, which also serves the platform double. */
function cli(args: string[], env: NodeJS.ProcessEnv, input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.stdin.end(input);
    child.on('close', (code) =>
      code === 0 ? resolve(stdout) : reject(new Error(`credvault ${args.join(' ')}: ${stderr}`)),
    );
  });
}

async function prepare(env: NodeJS.ProcessEnv, double: Awaited<ReturnType<typeof startGoogleDouble>>) {
  await cli(['init', '--json'], env);
  const client = double.defaultClient!;
  const app = {
    label: 'bench',
    client_id: client.clientId,
    client_secret: client.clientSecret,
    authorize_url: double.endpoints.authorize,
    token_url: double.endpoints.token,
    revoke_url: double.endpoints.revoke,
    api_base_url: double.url,
  };
  await cli(['apps', 'add', 'google_ads', '--from-file', '-', '--json'], env, JSON.stringify(app));
  const grant = double.issueGrant({
    clientId: client.clientId,
    scope: 'https://www.googleapis.com/auth/adwords',
  });
  await cli(
    [
      'connections',
      'add',
      'google_ads',
      '--app',
      'bench',
      '--account',
      '1234567890',
      '--name',
      'bench',
      '--refresh-token-file',
      '-',
    ],
    env,
    grant.refreshToken,
  );
}

export async function token({ runs = 15 } = {}) {
  const rows: Array<[string, number, string, string?]> = [];
  const double = await startGoogleDouble({ accessTokenTtlSeconds: 3600 });
  const { home, cleanup } = scratchHome();
  const base = { PATH: process.env.PATH, HOME: home, NO_COLOR: '1' };
  try {
    const bare = medianRun(['-e', '0'], base, runs);
    rows.push(['node -e 0 (baseline)', bare, '1.00×']);
    const pg = await scratchDatabase();
    if (pg) {
      const env = { ...base, CREDVAULT_HOME: `${home}-pg`, DATABASE_URL: pg.url };
      await prepare(env, double);
      const value = medianRun([BIN, 'token', 'get', 'bench'], env, runs);
      rows.push(['token get, valid token (PostgreSQL)', value, ratio(value, bare), '≤ 1.5×']);
      await pg.drop();
    }
    const env = { ...base, CREDVAULT_HOME: `${home}-embedded` };
    await prepare(env, double);
    const value = medianRun([BIN, 'token', 'get', 'bench'], env, Math.min(runs, 7), 1);
    rows.push(['token get, valid token (embedded)', value, ratio(value, bare), '(no target)']);
  } finally {
    cleanup();
    await double.close();
  }
  return { title: '`credvault token get` (median wall time)', rows };
}
