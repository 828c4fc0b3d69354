import { spawn } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GOOGLE_ADWORDS_SCOPE, type GoogleDouble, startGoogleDouble } from '../doubles/index.js';
import { addAppFor, adoptGrant } from '../helpers/flows.js';
import { ROOT } from '../helpers/paths.js';
import { createVault, DB_KIND, type TestVault } from '../helpers/vault.js';

/**
 * The package as application code uses it: a program in its own folder that imports 'credvault'
 * (resolved through node_modules to this package's exports, so the built dist/index.js and its
 * declarations), opens the vault with options rather than the CLI's environment, and works
 * through the Google Ads double.
 */

let vault: TestVault;
let google: GoogleDouble;
let appDir: string;
let issuedAccessTokens: Set<string>;

async function node(
  file: string,
  args: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [file, ...args], {
    cwd: appDir,
    // The process environment points somewhere else entirely: the program passes home, database URL
    // and an empty `env` itself, and nothing may be read from process.env.
    env: {
      PATH: process.env.PATH,
      HOME: vault.root,
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/nothing',
      CREDVAULT_HOME: '/nonexistent/credvault',
      CREDENTIAL_MASTER_KEY: 'not-a-key',
      CREDVAULT_MICROSOFT_CAMPAIGN_TYPES: 'Nonsense',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  return { code, stdout, stderr };
}

/**
 * The vault's URL as a service would hold it, with a password (PostgreSQL here trusts local
 * connections and ignores it): the library takes one, which only the CLI's --database-url refuses.
 */
function serviceUrl(): string | undefined {
  return vault.databaseUrl?.replace(/^(postgres(?:ql)?:\/\/[^:@/]+)@/, '$1:service-password@') ?? undefined;
}

function program(name: string, body: string): string {
  const file = join(appDir, name);
  writeFileSync(
    file,
    `import { openVault, InvalidInputError, NotFoundError } from 'credvault';
const vault = await openVault({ home: ${JSON.stringify(vault.home)}, databaseUrl: ${JSON.stringify(serviceUrl())}, actor: 'billing-service', env: {} });
const out = {};
try {
${body}
} finally {
  await vault.close();
}
// Closed means closed: the database opens again at once, in this same process (no lock left behind).
const again = await openVault({ home: ${JSON.stringify(vault.home)}, databaseUrl: ${JSON.stringify(vault.databaseUrl ?? undefined)}, env: { CREDVAULT_LOCK_TIMEOUT: '0' } });
// A call that reads the database through the reopened vault.
out.reopened = (await again.getValidAccessToken('google_ads:1234567890', { minTtl: 0 })).platform;
await again.close();
process.stdout.write(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? \`\${v}n\` : v)));
`,
  );
  return file;
}

/** How many tokens the audit log says were handed out to `actor`. */
async function servedTo(actor: string): Promise<number> {
  const audit = await vault.json<Array<{ action: string }>>(['audit', 'list', '--actor', actor]);
  return audit.filter((row) => row.action === 'token.serve').length;
}

beforeAll(async () => {
  vault = await createVault();
  google = await startGoogleDouble();
  appDir = join(vault.root, 'billing-service');
  mkdirSync(join(appDir, 'node_modules'), { recursive: true });
  symlinkSync(ROOT, join(appDir, 'node_modules', 'credvault'), 'dir');
  writeFileSync(join(appDir, 'package.json'), JSON.stringify({ name: 'billing-service', type: 'module' }));
  const app = await addAppFor(vault, 'google_ads', google as never);
  const grant = google.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE } as never);
  await adoptGrant(vault, 'google_ads', app.label, grant.refreshToken, {
    accounts: ['1234567890'],
    name: 'acme-us',
  });
  issuedAccessTokens = new Set(google.accessTokens.keys());
});

afterAll(async () => {
  await google?.close();
  await vault?.destroy();
});

describe("import { openVault } from 'credvault'", () => {
  it('hands out a valid access token, refreshing only when minTtl asks for it, and audits it with the actor', async () => {
    // The stored token was refreshed two minutes ago.
    await vault.sql(
      "update oauth_tokens_vault set last_refreshed_at = now() - interval '2 minutes', access_token_expires_at = now() + interval '3479 seconds'",
    );
    const before = google.refreshCount;
    const file = program(
      'token.mjs',
      `// Google's tokens live an hour: asking for more than that asks for the newest token (refreshed
// within the last minute), so this one is refreshed now.
const first = await vault.getValidAccessToken('google_ads:1234567890', { minTtl: 3700 });
// Two more modules of the application open the vault while this one is open, both at once (no
// waiting: a lock timeout of 0): on the embedded database they share this process's one database,
// and closing theirs (one of them twice) leaves this vault working.
const more = { home: ${JSON.stringify(vault.home)}, databaseUrl: ${JSON.stringify(vault.databaseUrl ?? undefined)}, env: { CREDVAULT_LOCK_TIMEOUT: '0' } };
const [other, third] = await Promise.all([openVault(more), openVault(more)]);
const theirs = await Promise.all([other, third].map((v) => v.getValidAccessToken('acme-us', { minTtl: 0 })));
await other.close();
await other.close();
out.modules = [...theirs, await third.getValidAccessToken('acme-us', { minTtl: 0 })].map((t) => t.accessToken === first.accessToken);
await third.close();
const second = await vault.getValidAccessToken('acme-us', { minTtl: 300 });
out.first = { ...first, expiresAt: first.expiresAt?.toISOString() };
out.second = { ...second, expiresAt: second.expiresAt?.toISOString() };
out.caps = vault.capabilities('linkedin_ads');
out.googleCaps = vault.provider('google_ads').capabilities;`,
    );
    const result = await node(file);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    // The token is one the platform issued (and is valid now), not one it had before.
    expect(google.accessTokens.has(out.first.accessToken)).toBe(true);
    expect(issuedAccessTokens.has(out.first.accessToken)).toBe(false);
    expect(out.first).toMatchObject({
      tokenType: 'Bearer',
      platform: 'google_ads',
      externalAccountId: '1234567890',
      refreshed: true,
    });
    expect(out.second).toMatchObject({ accessToken: out.first.accessToken, refreshed: false });
    expect(out.modules).toEqual([true, true, true]);
    expect(google.refreshCount).toBe(before + 1);
    expect(out.caps).toMatchObject({ validate_only: 'simulated', keywords: false });
    expect(out.reopened).toBe('google_ads');
    expect(out.googleCaps).toMatchObject({ validate_only: 'true', keywords: true, budget_unit: 'micros' });

    const audit = await vault.json<Array<{ action: string; actor: string; detail: Record<string, unknown> }>>(
      ['audit', 'list', '--actor', 'billing-service'],
    );
    const served = audit.filter((row) => row.action === 'token.serve');
    expect(served).toHaveLength(2);
    expect(served[0]!.detail).toMatchObject({ purpose: 'library' });
  });

  it('lists campaigns and changes a daily budget: validate-only is the platform dry run, then for real', async () => {
    const mutatesBefore = google.requests.filter((r) => r.path.endsWith('/campaignBudgets:mutate')).length;
    const file = program(
      'budget.mjs',
      `const ads = vault.provider('google_ads');
const campaigns = await ads.listCampaigns('google_ads:1234567890');
out.campaigns = campaigns.map((c) => ({ id: c.id, name: c.name, micros: c.dailyBudgetMicros, currency: c.currency, shared: c.budget.shared }));
out.dry = await ads.updateCampaignBudget('google_ads:1234567890', { campaignId: '21000000001', dailyBudgetMicros: 75_500_000n, validateOnly: true });
out.afterDry = (await ads.listCampaigns('google_ads:1234567890')).find((c) => c.id === '21000000001').dailyBudgetMicros;
out.real = await ads.updateCampaignBudget('google_ads:1234567890', { campaignId: '21000000001', dailyBudgetMicros: '75500000' });
try {
  await vault.provider('linkedin_ads').listCampaigns('google_ads:1234567890');
} catch (error) {
  out.wrongPlatform = { invalid: error instanceof InvalidInputError, code: error.code, message: error.message };
}
try {
  await ads.updateCampaignBudget('google_ads:1234567890', { campaignId: '99', dailyBudgetMicros: 1.5 });
} catch (error) {
  out.badMicros = { invalid: error instanceof InvalidInputError, message: error.message };
}
try {
  await ads.updateCampaignBudget('google_ads:1234567890', { campaignId: '21000000001', dailyBudgetMicros: -5n });
} catch (error) {
  out.negative = { invalid: error instanceof InvalidInputError, message: error.message };
}
try {
  await ads.listCampaigns('google_ads:999');
} catch (error) {
  out.missing = { notFound: error instanceof NotFoundError, code: error.code };
}
// What a plain JavaScript caller may pass where a string is expected.
out.nonString = {};
const calls = {
  tokenNull: () => vault.getValidAccessToken(null),
  tokenUndefined: () => vault.getValidAccessToken(),
  list: () => ads.listCampaigns(42),
  update: () => ads.updateCampaignBudget({}, { campaignId: '21000000001', dailyBudgetMicros: 1n }),
  provider: () => vault.provider(null),
  capabilities: () => vault.capabilities(undefined),
  purpose: () => vault.getValidAccessToken('acme-us', { purpose: 5 }),
  openHome: () => openVault({ home: 42 }),
  openEnv: () => openVault({ env: 'HOME=/tmp' }),
  openEnvUrl: () => openVault({ home: ${JSON.stringify(vault.home)}, env: { DATABASE_URL: 5 } }),
  openEnvKey: () => openVault({ home: ${JSON.stringify(vault.home)}, env: { CREDENTIAL_MASTER_KEY: 12345 } }),
};
for (const [name, call] of Object.entries(calls)) {
  try {
    await call();
    out.nonString[name] = 'no error';
  } catch (error) {
    out.nonString[name] = { invalid: error instanceof InvalidInputError, code: error.code, message: error.message };
  }
}
out.nullOptions = (await vault.getValidAccessToken('acme-us', null)).platform;
try {
  await vault.getValidAccessToken('acme-us', { minTtl: '300' });
  out.minTtlString = 'no error';
} catch (error) {
  out.minTtlString = { invalid: error instanceof InvalidInputError, message: error.message };
}
// A flag that is not a boolean: refused, not read as JavaScript reads it ('true' taken for false
// would change the live budget the caller only meant to check).
out.flags = {};
const flags = {
  validateString: { validateOnly: 'true' },
  validateNumber: { validateOnly: 1 },
  validateNull: { validateOnly: null },
  sharedString: { allowShared: 'yes' },
};
for (const [name, flag] of Object.entries(flags)) {
  try {
    out.flags[name] = await ads.updateCampaignBudget('acme-us', { campaignId: '21000000001', dailyBudgetMicros: 99_000_000n, ...flag });
  } catch (error) {
    out.flags[name] = { invalid: error instanceof InvalidInputError, code: error.code, message: error.message };
  }
}
// More than an int64 of micros (any platform's budget field): refused as the CLI refuses it, not
// even checked at the platform.
out.huge = {};
for (const [name, micros] of Object.entries({ bigint: 10n ** 30n, digits: '9223372036854775808' })) {
  try {
    out.huge[name] = await ads.updateCampaignBudget('acme-us', { campaignId: '21000000001', dailyBudgetMicros: micros, validateOnly: true });
  } catch (error) {
    out.huge[name] = { invalid: error instanceof InvalidInputError, message: error.message };
  }
}`,
    );
    const result = await node(file);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.campaigns).toContainEqual({
      id: '21000000001',
      name: 'Brand Search',
      micros: '50000000n',
      currency: 'USD',
      shared: false,
    });
    expect(out.campaigns.find((c: { id: string }) => c.id === '21000000002').shared).toBe(true);
    expect(out.dry).toMatchObject({ mode: 'validated', previousMicros: '50000000n', newMicros: '75500000n' });
    expect(out.afterDry).toBe('50000000n');
    expect(out.real).toMatchObject({ mode: 'applied', previousMicros: '50000000n', newMicros: '75500000n' });
    const mutates = google.requests.filter((r) => r.path.endsWith('/campaignBudgets:mutate'));
    expect(mutates.length - mutatesBefore).toBe(2);
    expect(JSON.parse(mutates.at(-2)!.body).validateOnly).toBe(true);
    expect(out.wrongPlatform).toMatchObject({ invalid: true, code: 'invalid_input' });
    expect(out.wrongPlatform.message).toContain('is a Google Ads connection, not LinkedIn Ads');
    expect(out.badMicros).toMatchObject({ invalid: true });
    expect(out.badMicros.message).toContain('integer number of micros');
    expect(out.missing).toEqual({ notFound: true, code: 'not_found' });
    expect(out.negative).toEqual({ invalid: true, message: 'dailyBudgetMicros must be more than zero' });
    for (const [name, answer] of Object.entries(out.nonString)) {
      expect(answer, name).toMatchObject({ invalid: true, code: 'invalid_input' });
      expect((answer as { message: string }).message, name).toMatch(
        /must be (a string|an object of variables) \(got (null|undefined|number|string|an object)\)$/,
      );
    }
    expect(out.nonString.tokenNull.message).toBe('the connection must be a string (got null)');
    expect(out.nonString.openEnvUrl.message).toBe(
      "openVault's env.DATABASE_URL must be a string (got number)",
    );
    expect(out.nonString.openEnvKey.message).toBe(
      "openVault's env.CREDENTIAL_MASTER_KEY must be a string (got number)",
    );
    expect(out.minTtlString).toEqual({
      invalid: true,
      message: 'minTtl must be whole seconds between 0 and 31536000 (a year; got the string "300")',
    });
    expect(out.nullOptions).toBe('google_ads');
    expect(out.huge).toEqual({
      bigint: {
        invalid: true,
        message: `dailyBudgetMicros ${10n ** 30n} is more than any platform's budget field holds`,
      },
      digits: {
        invalid: true,
        message: "dailyBudgetMicros 9223372036854775808 is more than any platform's budget field holds",
      },
    });
    expect(out.flags).toEqual({
      validateString: {
        invalid: true,
        code: 'invalid_input',
        message: 'validateOnly must be a boolean, true or false (got the string "true")',
      },
      validateNumber: {
        invalid: true,
        code: 'invalid_input',
        message: 'validateOnly must be a boolean, true or false (got the number 1)',
      },
      validateNull: {
        invalid: true,
        code: 'invalid_input',
        message: 'validateOnly must be a boolean, true or false (got null)',
      },
      sharedString: {
        invalid: true,
        code: 'invalid_input',
        message: 'allowShared must be a boolean, true or false (got the string "yes")',
      },
    });

    // What the CLI sees afterwards: the new budget, and the change audited with the library's actor.
    const listed = await vault.json<Array<{ id: string; daily_budget: string }>>([
      'campaigns',
      'list',
      'google_ads:1234567890',
    ]);
    expect(listed.find((c) => c.id === '21000000001')?.daily_budget).toBe('75.50');
    const audit = await vault.json<Array<{ action: string; detail: Record<string, unknown> }>>([
      'audit',
      'list',
      '--actor',
      'billing-service',
    ]);
    expect(audit.find((row) => row.action === 'campaign.budget')?.detail).toMatchObject({
      previous_micros: '50000000',
      new_micros: '75500000',
      mode: 'applied',
    });
    // The tokens served for these calls say they were the library's, not the CLI command's (before:
    // "campaigns list" and "campaigns set-budget", as if an operator had run them at the terminal).
    const purposes = new Set(
      audit.filter((row) => row.action === 'token.serve').map((row) => row.detail.purpose),
    );
    expect(purposes).toContain('library listCampaigns');
    expect(purposes).toContain('library updateCampaignBudget (validateOnly)');
    expect(purposes).toContain('library updateCampaignBudget');
    expect([...purposes].filter((p) => String(p).startsWith('campaigns '))).toEqual([]);
  });

  it('close() waits for the calls already started, and refuses those made after it began', async () => {
    // The stored token ends within the default minTtl, and the platform takes 1.5 s to refresh it.
    await vault.sql(
      "update oauth_tokens_vault set last_refreshed_at = now() - interval '10 minutes', access_token_expires_at = now() + interval '30 seconds'",
    );
    const before = google.refreshCount;
    const servedBefore = await servedTo('billing-service');
    google.faults.latencyMs = 1500;
    let out: { after: unknown; inFlight: { refreshed?: boolean; accessToken?: string }; change: unknown };
    try {
      const file = program(
        'close.mjs',
        `const started = vault.getValidAccessToken('acme-us');
// A budget change under way too (it waits for the same refresh, then changes and audits).
const changing = vault.provider('google_ads').updateCampaignBudget('acme-us', { campaignId: '21000000001', dailyBudgetMicros: 66_000_000n });
await new Promise((resolve) => setTimeout(resolve, 300));
const closing = vault.close();
try {
  await vault.getValidAccessToken('acme-us', { minTtl: 0 });
  out.after = 'no error';
} catch (error) {
  out.after = { invalid: error instanceof InvalidInputError, message: error.message };
}
try {
  const token = await started;
  out.inFlight = { refreshed: token.refreshed, accessToken: token.accessToken };
} catch (error) {
  out.inFlight = { name: error.constructor.name, message: error.message };
}
try {
  const { mode, newMicros, unrecorded } = await changing;
  out.change = { mode, newMicros, unrecorded };
} catch (error) {
  out.change = { name: error.constructor.name, message: error.message };
}
await closing;`,
      );
      const result = await node(file);
      expect(result.code, result.stderr).toBe(0);
      out = JSON.parse(result.stdout);
      expect(out.after).toEqual({
        invalid: true,
        message: 'this vault was closed; open it again with openVault()',
      });
      // The refresh under way finished: its answer stored, its token served and audited.
      expect(out.inFlight).toMatchObject({ refreshed: true });
      expect(google.accessTokens.has(out.inFlight.accessToken ?? '')).toBe(true);
      expect(google.refreshCount).toBe(before + 1);
      // The budget change under way was made and audited (not 'unrecorded').
      expect(out.change).toEqual({ mode: 'applied', newMicros: '66000000n', unrecorded: null });
    } finally {
      google.faults.latencyMs = 0;
    }
    // No lease left behind: the CLI is served at once, the token the library refreshed.
    const started = Date.now();
    const served = await vault.cli(['token', 'get', 'acme-us'], { secretOutput: true });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(served.code, served.stderr).toBe(0);
    expect(served.stdout.trim()).toBe(out.inFlight.accessToken);
    // The token handed out, and the one the budget change used.
    expect(await servedTo('billing-service')).toBe(servedBefore + 2);
    const audit = await vault.json<Array<{ action: string; detail: Record<string, unknown> }>>([
      'audit',
      'list',
      '--actor',
      'billing-service',
      '--action',
      'campaign.budget',
      '--limit',
      '1',
    ]);
    expect(audit[0]?.detail).toMatchObject({ new_micros: '66000000', mode: 'applied' });
  });

  it("a refresh the platform refuses: the error's retryAfter is the cool-down recorded, as the next call's", async () => {
    await vault.sql(
      "update oauth_tokens_vault set last_refreshed_at = now() - interval '10 minutes', access_token_expires_at = now() + interval '30 seconds'",
    );
    // Every attempt of the refresh (three) is answered 503 with Retry-After: 5; the cool-down
    // recorded is the longer of the backoff (30 s, jittered) and the platform's 5 s.
    google.faults.failNext(3, { status: 503, body: 'down', headers: { 'retry-after': '5' } });
    try {
      const file = program(
        'cooldown.mjs',
        `for (const name of ['first', 'next']) {
  try {
    await vault.getValidAccessToken('acme-us');
    out[name] = 'no error';
  } catch (error) {
    out[name] = { name: error.constructor.name, code: error.code, retryAfter: error.retryAfter, message: error.message, hint: error.hint };
  }
}`,
      );
      const result = await node(file);
      // The program's own last call (minTtl 0) is served the token that still has 30 s.
      expect(result.code, result.stderr).toBe(0);
      const out = JSON.parse(result.stdout);
      expect(out.first).toMatchObject({ name: 'UnavailableError', code: 'unavailable' });
      expect(out.next).toMatchObject({ name: 'UnavailableError', code: 'unavailable' });
      expect(out.next.message).toContain('not calling the platform again before');
      expect(out.first.retryAfter).toBeGreaterThanOrEqual(5);
      // Told the same end both times (the second call came a moment later).
      expect(Math.abs(out.first.retryAfter - out.next.retryAfter)).toBeLessThanOrEqual(2);
      // (This host's clock against the database's: within a second.)
      const until = (message: string) =>
        Date.parse(message.split('not calling the platform again before ')[1]!);
      expect(Math.abs(until(out.first.message) - until(out.next.message))).toBeLessThan(1000);
      expect(out.first.hint).toBe(
        `Wait ${out.first.retryAfter}s, or force a refresh with \`credvault connections refresh acme-us --force\`.`,
      );
    } finally {
      google.faults.reset();
      // The connection as the other tests expect it: its cool-down and failure cleared.
      const refreshed = await vault.cli(['connections', 'refresh', 'acme-us', '--force']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
    }
  });

  it('fails closed: with the audit log refusing writes, getValidAccessToken rejects and hands out no token', async () => {
    const served = await servedTo('billing-service');
    const file = join(appDir, 'audit-refused.mjs');
    writeFileSync(
      file,
      `import { openVault } from 'credvault';
const vault = await openVault({ home: ${JSON.stringify(vault.home)}, databaseUrl: ${JSON.stringify(serviceUrl())}, actor: 'billing-service', env: {} });
const out = {};
try {
  // minTtl 0: the stored token is valid, so nothing but its audit record stands between it and the caller.
  out.token = await vault.getValidAccessToken('acme-us', { minTtl: 0 });
} catch (error) {
  out.error = { name: error.constructor.name, code: error.code, message: error.message };
} finally {
  await vault.close();
}
process.stdout.write(JSON.stringify(out));
`,
    );
    await vault.refuseAuditWrites();
    let result: Awaited<ReturnType<typeof node>>;
    try {
      result = await node(file);
    } finally {
      await vault.sql('drop trigger refuse_audit on credential_access_audit');
    }
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.token).toBeUndefined();
    // The database's refusal of the audit row, as it said it.
    expect(out.error).toMatchObject({ name: 'DatabaseError', code: 'database_error' });
    expect(out.error.message).toContain('audit is read-only');
    // No access token the platform ever issued left the library, in its answer or its error.
    for (const token of google.accessTokens.keys()) {
      expect(result.stdout).not.toContain(token);
      expect(result.stderr).not.toContain(token);
    }
    // Nothing was recorded as served: the row could not be.
    expect(await servedTo('billing-service')).toBe(served);
  });

  it('an actor with control characters is recorded as given, and audit list shows it escaped', async () => {
    const actor = 'ops\nbot\u001b[31m';
    const file = join(appDir, 'actor.mjs');
    writeFileSync(
      file,
      `import { openVault } from 'credvault';
const vault = await openVault({ home: ${JSON.stringify(vault.home)}, databaseUrl: ${JSON.stringify(serviceUrl())}, actor: ${JSON.stringify(actor)}, env: {} });
try {
  await vault.getValidAccessToken('acme-us', { minTtl: 0 });
} finally {
  await vault.close();
}
`,
    );
    const result = await node(file);
    expect(result.code, result.stderr).toBe(0);
    // The record keeps it whole (--json escapes it as JSON does).
    const rows = await vault.json<Array<{ actor: string; action: string }>>([
      'audit',
      'list',
      '--limit',
      '1',
    ]);
    expect(rows[0]).toMatchObject({ actor, action: 'token.serve' });
    // The table: one line for the row, the escape sequence shown, not sent to the terminal.
    const table = await vault.cli(['audit', 'list', '--limit', '1']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).not.toContain('\u001b');
    expect(table.stdout).toContain('ops\\nbot\\u001b[31m');
    expect(table.stdout.trimEnd().split('\n')).toHaveLength(2);
  });

  it.skipIf(DB_KIND === 'postgres')(
    'a database it cannot reach is a DatabaseError (database_error) without the query, as in the CLI',
    async () => {
      const file = join(appDir, 'unreachable.mjs');
      writeFileSync(
        file,
        `import { openVault, DatabaseError } from 'credvault';
let vault;
try {
  vault = await openVault({ databaseUrl: 'postgres://nobody@127.0.0.1:1/nothing', env: { CREDENTIAL_MASTER_KEY: ${JSON.stringify(
    'A'.repeat(43) + '=',
  )} } });
  await vault.getValidAccessToken('google_ads:1234567890');
} catch (error) {
  process.stdout.write(JSON.stringify({ typed: error instanceof DatabaseError, code: error.code, message: error.message }));
} finally {
  await vault?.close();
}
`,
      );
      const result = await node(file);
      expect(result.code, result.stderr).toBe(0);
      const out = JSON.parse(result.stdout) as { typed: boolean; code: string; message: string };
      expect(out).toMatchObject({ typed: true, code: 'database_error' });
      expect(out.message).toContain('cannot reach the database at postgres://nobody@127.0.0.1:1/nothing');
      expect(out.message).not.toContain('Failed query');
    },
  );

  // The declarations do not depend on the database: checked once.
  it.skipIf(DB_KIND === 'postgres')(
    'ships type declarations a TypeScript consumer compiles against',
    async () => {
      const file = join(appDir, 'consumer.ts');
      writeFileSync(
        file,
        `import { openVault, type Campaign, type PlatformCapabilities, type Vault } from 'credvault';
export async function daily(vault: Vault): Promise<bigint | null> {
  const caps: PlatformCapabilities = vault.capabilities('google_ads');
  const campaigns: Campaign[] = await vault.provider('google_ads').listCampaigns('acme');
  return caps.keywords ? (campaigns[0]?.dailyBudgetMicros ?? null) : null;
}
export const opened: Promise<Vault> = openVault({ home: '/tmp/x' });
// A change made whose audit row could not be written says so.
export const unrecorded = async (v: Vault): Promise<string | null> =>
  (await v.provider('google_ads').updateCampaignBudget('a', { campaignId: '1', dailyBudgetMicros: 1n })).unrecorded;
// @ts-expect-error validateOnly is a boolean
export const wrong = (v: Vault) => v.provider('google_ads').updateCampaignBudget('a', { campaignId: '1', dailyBudgetMicros: 1n, validateOnly: 'yes' });
`,
      );
      writeFileSync(
        join(appDir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            strict: true,
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            target: 'ES2022',
            lib: ['ES2023'],
            types: ['node'],
            typeRoots: [join(ROOT, 'node_modules/@types')],
            noEmit: true,
            skipLibCheck: true,
          },
          files: ['consumer.ts'],
        }),
      );
      const result = await node(join(ROOT, 'node_modules/typescript/bin/tsc'), ['-p', 'tsconfig.json']);
      expect(result.stdout + result.stderr).toBe('');
      expect(result.code).toBe(0);
    },
  );
});
