/**
 * Bad input as a user gives it, and what credvault answers: a message naming the problem and what to
 * do, the contract's exit code, nothing written. Parsing input does not depend on the database: these
 * tests run once (test/helpers/vault.ts), on one vault for the file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeSecret } from '../helpers/secrets.js';
import { createVault, ONCE, type TestVault } from '../helpers/vault.js';

let v: TestVault;
beforeAll(async () => {
  if (ONCE) v = await createVault();
});
afterAll(async () => {
  await v?.destroy();
});

/** Which of ESC, BEL, CSI (a C1 control) and a bidi override a text holds raw: a terminal acts on them. */
function rawControls(text: string): string[] {
  return ['\u001b', '\u0007', '\u009b', '\u202e'].filter((char) => text.includes(char));
}

function jsonError(stderr: string): { code: string; message: string } {
  // One JSON document, on one line: what a script parses.
  expect(stderr.trim().split('\n')).toHaveLength(1);
  return (JSON.parse(stderr) as { error: { code: string; message: string } }).error;
}

describe.runIf(ONCE)('an app file with an empty secret', () => {
  it('names the empty field and what to do (exit 2), for apps add and apps update', async () => {
    const file = join(v.root, 'app.json');
    const app = {
      client_id: '1234-abc.apps.googleusercontent.com',
      redirect_uri: 'http://127.0.0.1:8080/callback',
      client_secret: '',
    };
    writeFileSync(file, JSON.stringify(app));
    const empty = await v.cli(['apps', 'add', 'linkedin_ads', '--label', 'li', '--from-file', file]);
    expect(empty.code, empty.stderr).toBe(2);
    expect(empty.stderr).toContain(`error: client_secret in ${file} is empty\n`);
    expect(empty.stderr).toContain("Put the app's client secret in it, or leave client_secret out");
    // Not the message for a secret not given at all, which sent the user back to the very file.
    expect(empty.stderr).not.toContain('Give it in --from-file');

    writeFileSync(file, JSON.stringify({ ...app, client_secret: '   ' }));
    const spaces = await v.cli([
      'apps',
      'add',
      'linkedin_ads',
      '--label',
      'li',
      '--from-file',
      file,
      '--json',
    ]);
    expect(spaces.code).toBe(2);
    expect(jsonError(spaces.stderr)).toEqual({
      code: 'invalid_input',
      message: `client_secret in ${file} is empty. Put the app's client secret in it, or leave client_secret out to be asked for it at a terminal.`,
    });

    // An update: an empty developer token was taken for "not given" and the update said it was done.
    const secret = fakeSecret('GOCSPX');
    const added = await v.json<{ has_developer_token: boolean }>(
      ['apps', 'add', 'google_ads', '--label', 'g', '--from-file', '-'],
      { input: JSON.stringify({ ...app, client_secret: secret, developer_token: fakeSecret('dev') }) },
    );
    expect(added.has_developer_token).toBe(true);
    const update = await v.cli(['apps', 'update', 'google_ads/g', '--from-file', '-'], {
      input: JSON.stringify({ developer_token: '' }),
    });
    expect(update.code, update.stderr).toBe(2);
    expect(update.stderr).toContain('error: developer_token in standard input is empty');
    expect(update.stderr).toContain(
      'leave developer_token out to keep the stored one (--clear-developer-token removes it)',
    );
  });
});

describe.runIf(ONCE)('import google-ads-yaml: a value YAML reads as a number or a boolean', () => {
  const base = (overrides: Record<string, string>) => {
    const keys: Record<string, string> = {
      client_id: '"x.apps.googleusercontent.com"',
      client_secret: `"${fakeSecret('cs')}"`,
      developer_token: `"${fakeSecret('dev')}"`,
      refresh_token: `"1//${fakeSecret('rt')}"`,
      customer_id: '1234567890',
      ...overrides,
    };
    return Object.entries(keys)
      .map(([key, value]) => `${key}: ${value}\n`)
      .join('');
  };

  it('is refused naming the key and its line, telling to quote it (exit 2); the value is not echoed', async () => {
    const file = join(v.root, 'google-ads.yaml');
    // A leading zero YAML drops (0123… reads as 123…), a boolean, and a long id as a bare number.
    for (const [key, value, line, what] of [
      ['client_secret', '0012345678901234567890', 2, 'a number to YAML, not text'],
      ['developer_token', 'true', 3, 'a boolean to YAML (true or false), not text'],
      ['client_id', '123456789012345678901234', 1, 'a number to YAML, not text'],
    ] as const) {
      writeFileSync(file, base({ [key]: value }));
      const run = await v.cli(['import', 'google-ads-yaml', file, '--dry-run']);
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toContain(`error: ${file} line ${line}: ${key} is ${what}`);
      expect(run.stderr).toContain(
        `Quote the value (${key}: "…") so that it is read as written; nothing was imported.`,
      );
      if (value !== 'true') expect(run.stderr).not.toContain(value.replace(/^0+/, ''));
    }
  });

  it('takes login_customer_id and customer_id as numbers written as their digits, refuses one that does not read back; toString is an unknown key', async () => {
    const file = join(v.root, 'google-ads.yaml');
    writeFileSync(file, base({ login_customer_id: '0123456789' }));
    const zero = await v.cli(['import', 'google-ads-yaml', file, '--dry-run', '--json']);
    expect(zero.code, zero.stderr).toBe(2);
    expect(jsonError(zero.stderr).message).toBe(
      `${file} line 6: login_customer_id is a number to YAML that does not read back as it is written (a leading zero, a sign, a decimal point, 0x…). Quote the value (login_customer_id: "…") so that it is read as written, or write the id as its digits alone; nothing was imported.`,
    );
    // What many a real google-ads.yaml holds: ids as bare numbers, a list of them too. (And keys named
    // like an object's properties, which stopped the import with an internal error: unknown keys.)
    writeFileSync(
      file,
      base({
        login_customer_id: '1112223333',
        customer_id: '[1234567890, 2345678901]',
        toString: '1',
        constructor: '"x"',
      }),
    );
    const plan = await v.json<{
      applied: boolean;
      plan: Array<{ action: string; target: string }>;
      unknown: string[];
    }>(['import', 'google-ads-yaml', file, '--dry-run']);
    expect(plan.applied).toBe(false);
    // Listed as the file spells them: keys are case-sensitive (toString is no tostring).
    expect(plan.unknown).toEqual(['constructor', 'toString']);
    expect(plan.plan.map((p) => `${p.action} ${p.target}`)).toEqual([
      'create imported',
      'create 1234567890',
      'create 2345678901',
    ]);
  });
});

describe.runIf(ONCE)('import env: a variable named like an object property', () => {
  it('is listed as unknown, not taken for a setting (GOOGLE_ADS_toString was swallowed)', async () => {
    const file = join(v.root, 'props.env');
    writeFileSync(
      file,
      `GOOGLE_ADS_toString=x\nGOOGLE_ADS_constructor=y\nGOOGLE_ADS_CLIENT_ID=c.apps.googleusercontent.com\nGOOGLE_ADS_CLIENT_SECRET=${fakeSecret('cs')}\n`,
    );
    const plan = await v.json<{ plan: Array<{ action: string; kind: string }>; unknown: string[] }>([
      'import',
      'env',
      '--file',
      file,
      '--dry-run',
    ]);
    expect(plan.unknown).toEqual(['GOOGLE_ADS_constructor', 'GOOGLE_ADS_toString']);
    expect(plan.plan.map((p) => `${p.action} ${p.kind}`)).toEqual(['create app']);
  });
});

describe.runIf(ONCE)('input echoed back in an error', () => {
  const evil = 'a\u001b[31mRED\u0007\u009b2J\u202e"q';

  it('shows control characters escaped, as JSON writes them, in text and under --json', async () => {
    const text = await v.cli(['apps', 'show', evil]);
    expect(text.code).toBe(3);
    expect(rawControls(text.stderr)).toEqual([]);
    expect(text.stderr).toContain('error: no app "a\\u001b[31mRED\\u0007\\u009b2J\\u202e\\"q"\n');
    const json = await v.cli(['apps', 'show', evil, '--json']);
    expect(json.code).toBe(3);
    expect(rawControls(json.stderr)).toEqual([]);
    expect(jsonError(json.stderr)).toEqual({
      code: 'not_found',
      message: 'no app "a\\u001b[31mRED\\u0007\\u009b2J\\u202e\\"q". See `credvault apps list`.',
    });
    // The argument parser's own messages (an unknown command) go through the same writer.
    const command = await v.cli([evil]);
    expect(command.code).toBe(2);
    expect(command.stderr).toBe("error: unknown command 'a\\u001b[31mRED\\u0007\\u009b2J\\u202e\"q'\n");
    // Its suggestion on a line of its own is the hint: a second line, not an escaped line break.
    const typo = await v.cli(['apps', 'lst']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toBe("error: unknown command 'lst'\n(Did you mean list?)\n");
    // A callback address that is not a URL is quoted without its query: that is where the code is.
    const callback = await v.cli([
      'connections',
      'complete',
      '--state',
      'x',
      '--callback-url',
      '127.0.0.1:8080/callback?code=4-0AbCdEfGhIjKl&state=x',
    ]);
    expect(callback.code).toBe(2);
    expect(callback.stderr).toContain('--callback-url is not a URL: "127.0.0.1:8080/callback?…"');
    expect(callback.stderr).not.toContain('AbCdEfGhIjKl');
    // doctor prints its checks itself: the same escaping there.
    const doctor = await v.cli(['doctor'], { env: { CREDENTIAL_MASTER_KEY_FILE: join(v.root, evil) } });
    expect(doctor.code).toBe(6);
    expect(rawControls(doctor.stdout + doctor.stderr)).toEqual([]);
    expect(doctor.stdout).toContain('a\\u001b[31mRED');
  });

  it('cuts a 100,000-character value with an ellipsis, keeping what the message says after it', async () => {
    const label = 'x'.repeat(100_000);
    const text = await v.cli(['apps', 'add', 'google_ads', '--label', label, '--client-id', 'y']);
    expect(text.code).toBe(2);
    expect(text.stderr).toMatch(/^error: label "x{110}…x{49}" must start with a letter or digit/);
    expect(text.stderr.length).toBeLessThan(400);
    // With spaces in it, and under --json: still one short, valid JSON document.
    const spaced = `${'ab '.repeat(33_333)}end`;
    const json = await v.cli(['apps', 'add', 'google_ads', '--label', spaced, '--client-id', 'y', '--json']);
    expect(json.code).toBe(2);
    const error = jsonError(json.stderr);
    expect(error.code).toBe('invalid_input');
    expect(error.message).toMatch(/^label "(ab ){36}ab…( ab){15} end" must start with a letter or digit/);
    expect(error.message.length).toBeLessThan(400);
  });
});

describe.runIf(ONCE)('a folder where a file is expected', () => {
  it('says so, and names the file inside it when it holds the usual one', async () => {
    const folder = join(v.root, 'creds');
    mkdirSync(folder);
    writeFileSync(join(folder, 'google-ads.yaml'), '');
    writeFileSync(join(folder, '.env'), '');
    const yaml = await v.cli(['import', 'google-ads-yaml', folder]);
    expect(yaml.code).toBe(2);
    expect(yaml.stderr).toBe(
      `error: cannot read ${folder} (FILE): it is a folder\nGive FILE the file inside it: ${folder}/google-ads.yaml.\n`,
    );
    const env = await v.cli(['import', 'env', '--file', folder, '--json']);
    expect(env.code).toBe(2);
    expect(jsonError(env.stderr).message).toBe(
      `cannot read ${folder} (--file): it is a folder. Give --file the file inside it: ${folder}/.env.`,
    );
    const token = await v.cli([
      'connections',
      'add',
      'google_ads',
      '--app',
      'g',
      '--account',
      '1234567890',
      '--refresh-token-file',
      folder,
    ]);
    expect(token.code).toBe(2);
    expect(token.stderr).toBe(
      `error: cannot read ${folder} (--refresh-token-file): it is a folder\nGive --refresh-token-file the file inside it.\n`,
    );
    const key = await v.cli(['key', 'status'], { env: { CREDENTIAL_MASTER_KEY_FILE: folder } });
    expect(key.code).toBe(6);
    expect(key.stderr).toBe(
      `error: the master key file ${folder} (from CREDENTIAL_MASTER_KEY_FILE) is a folder\nSet CREDENTIAL_MASTER_KEY_FILE to the key file itself, not the folder that holds it.\n`,
    );
  });
});

describe.runIf(ONCE)('an empty connection name', () => {
  it('is bad usage (exit 2) saying how to name one, not "not found"', async () => {
    for (const args of [
      ['token', 'get', ''],
      ['connections', 'show', ' '],
    ]) {
      const result = await v.cli(args);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain('error: no connection was named\n');
    }
  });
});

describe.runIf(ONCE)('a connection name shaped like an id', () => {
  it('is refused (exit 2) saying it would be read as an id, not that it breaks rules it keeps', async () => {
    const result = await v.cli(['connections', 'rename', 'acct', 'abcdef01-2345-4678-9abc-def012345678']);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toBe(
      'error: connection name "abcdef01-2345-4678-9abc-def012345678" has the shape of a connection id, which a name must not have: it would be read as one\n' +
        'Choose a name that is not a UUID, for example with a word in front of it.\n',
    );
  });
});
