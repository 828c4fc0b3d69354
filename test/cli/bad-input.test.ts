/**
 * Bad input as a user gives it, and what credvault answers: a message naming the problem and what to
 * do, the contract's exit code, nothing written. Parsing input does not depend on the database: these
 * tests run once (test/helpers/vault.ts), on one vault for the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
