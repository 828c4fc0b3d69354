import { describe, expect, it } from 'vitest';
import { parseTimeout } from '../../src/cli/commands/connect.js';
import { parseDuration } from '../../src/config.js';
import { InvalidInputError } from '../../src/errors.js';
import { parsePlatform } from '../../src/providers/catalog.js';
import { parseJson } from '../../src/util/json.js';

describe('parseJson', () => {
  it.each([
    ['a trailing comma', '{\n  "label": "x",\n}', 3, 1],
    ['a bare word', '{"label": prod}', 1, 11],
    ['a missing comma', '{\n  "label": "x"\n  "client_id": "y"\n}', 3, 3],
    ['a cut-off file', '{"label": "x"', 1, 14],
    ['an empty file', '', 1, 1],
  ])('names the line and column of %s', (_what, text, line, column) => {
    expect(() => parseJson(text, 'app.json')).toThrow(
      new RegExp(`^app\\.json is not valid JSON: .* at line ${line}, column ${column}$`),
    );
  });

  it('is an input error (exit 2)', () => {
    expect(() => parseJson('{', 'x')).toThrow(InvalidInputError);
    expect(new InvalidInputError('x').exitCode).toBe(2);
  });

  it('parses valid JSON as JSON.parse does', () => {
    expect(parseJson('{"a":[1,2,{"b":null}]}', 'x')).toEqual({ a: [1, 2, { b: null }] });
  });
});

describe('parseDuration', () => {
  it.each([
    ['90s', 90_000],
    ['30m', 1_800_000],
    ['12h', 43_200_000],
    ['7d', 604_800_000],
  ])('%s', (text, ms) => expect(parseDuration(text, '--interval')).toBe(ms));

  it('rejects what it cannot read, naming the flag', () => {
    expect(() => parseDuration('10 minutes', '--interval')).toThrow(/--interval must be a duration like 90s/);
  });

  it('refuses zero unless the caller takes it, and more than a hundred years', () => {
    expect(() => parseDuration('0s', '--expires-in')).toThrow(/--expires-in must be longer than zero/);
    expect(parseDuration('0s', '--since', { zero: true })).toBe(0);
    expect(parseDuration('36500d', '--expires-in')).toBe(36_500 * 86_400_000);
    expect(() => parseDuration('36501d', '--expires-in')).toThrow(/--expires-in is too long: at most 36500d/);
    expect(() => parseDuration('99999999999999999999d', '--expires-in')).toThrow(/too long/);
  });
});

describe('parsePlatform', () => {
  it('accepts snake and kebab forms', () => {
    expect(parsePlatform('google-ads')).toBe('google_ads');
    expect(parsePlatform('Reddit_Ads')).toBe('reddit_ads');
  });
  it('lists the valid platforms for an unknown one', () => {
    expect(() => parsePlatform('tiktok')).toThrow(/unknown platform "tiktok"/);
  });
});

describe('connect --timeout', () => {
  it.each([
    ['300', 300_000],
    ['1', 1000],
    ['90s', 90_000],
    ['5m', 300_000],
    ['10m', 600_000],
  ])('takes %s (whole seconds, or a duration)', (text, ms) => {
    expect(parseTimeout(text)).toBe(ms);
  });

  // Number() took these: hex, exponents, spaces, fractions.
  it.each(['0x3', '1e0', ' 2', '2 ', '1.5', '', '0', '0s', '601', '11m', '500ms', '-1', 'abc'])(
    'refuses %j, as strictly as --min-ttl',
    (text) => {
      expect(() => parseTimeout(text)).toThrow(InvalidInputError);
      expect(() => parseTimeout(text)).toThrow(
        /--timeout must be whole seconds \(or a duration like 90s or 5m\) from 1s to 600s/,
      );
    },
  );
});
