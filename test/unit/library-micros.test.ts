import { describe, expect, it } from 'vitest';
import { parseAmount, toMicros } from '../../src/providers/money.js';

describe("micros from a library caller (toMicros), bounded as the CLI's amounts (parseAmount)", () => {
  it('takes up to an int64 of micros and refuses more, with the CLI’s words', () => {
    const max = 2n ** 63n - 1n;
    expect(toMicros(max)).toBe(max);
    expect(toMicros(max.toString())).toBe(max);
    expect(() => toMicros(max + 1n)).toThrow(
      "dailyBudgetMicros 9223372036854775808 is more than any platform's budget field holds",
    );
    expect(() => toMicros(10n ** 30n)).toThrow("is more than any platform's budget field holds");
    expect(() => toMicros('1000000000000000000000000000000')).toThrow(
      "is more than any platform's budget field holds",
    );
    // The same bound as the CLI's: an amount of the same size is refused there too.
    expect(() => parseAmount('9223372036855', 'USD')).toThrow(
      "is more than any platform's budget field holds",
    );
  });
});
