import { describe, expect, it } from 'vitest';
import {
  displayMoney,
  formatMicros,
  microsToNumber,
  minorDigits,
  numberToMicros,
  parseAmount,
  toMicros,
} from '../../src/providers/money.js';

describe('money in exact micros', () => {
  it('takes the digits after the point from ISO 4217, not from how cash is counted', () => {
    expect(minorDigits('USD')).toBe(2);
    expect(minorDigits('JPY')).toBe(0);
    expect(minorDigits('KWD')).toBe(3);
    // ICU says 0 for these (cash); ISO 4217, which the platforms bill in, says 2 and 3.
    expect(minorDigits('HUF')).toBe(2);
    expect(minorDigits('IDR')).toBe(2);
    expect(minorDigits('IQD')).toBe(3);
    // Not in every ICU: ISO's own table (CLF 4, UYI 0), and VEF, still in Microsoft's currency table.
    expect(minorDigits('CLF')).toBe(4);
    expect(minorDigits('UYI')).toBe(0);
    expect(minorDigits('VEF')).toBe(2);
    expect(() => minorDigits('XYZ')).toThrow('not an ISO 4217 currency code');
    expect(() => minorDigits('usd')).toThrow('not an ISO 4217 currency code');
  });

  it('parses amounts as typed, exactly, and refuses what the currency cannot charge', () => {
    expect(parseAmount('0.01', 'USD')).toBe(10_000n);
    expect(parseAmount('1234567.89', 'USD')).toBe(1_234_567_890_000n);
    expect(parseAmount('1,234,567.89', 'USD')).toBe(1_234_567_890_000n);
    expect(parseAmount('75.50', 'EUR')).toBe(75_500_000n);
    expect(parseAmount('1500.50', 'HUF')).toBe(1_500_500_000n);
    expect(parseAmount('5000', 'JPY')).toBe(5_000_000_000n);
    expect(parseAmount('1.005', 'KWD')).toBe(1_005_000n);
    expect(() => parseAmount('1000.5', 'JPY')).toThrow('JPY has no minor unit');
    expect(() => parseAmount('1.005', 'USD')).toThrow('USD has 2 digits after the decimal point');
    expect(() => parseAmount('-5', 'USD')).toThrow('is not an amount');
    expect(() => parseAmount('1e3', 'USD')).toThrow('is not an amount');
    expect(() => parseAmount('0', 'USD')).toThrow('more than zero');
    // "1,500": one and a half where a comma is the decimal mark; said in full, it is clear.
    expect(() => parseAmount('1,500', 'EUR')).toThrow('"1,500" could be 1500 or 1.5');
    expect(() => parseAmount('12,340', 'KWD')).toThrow('"12,340" could be 12340 or 12.34');
    expect(parseAmount('1,500.00', 'EUR')).toBe(1_500_000_000n);
    expect(parseAmount('1,500,000', 'JPY')).toBe(1_500_000_000_000n);
    // Beyond an int64 of micros (Google's field), refused before anything is sent.
    expect(parseAmount('9223372036854', 'USD')).toBe(9_223_372_036_854_000_000n);
    expect(() => parseAmount('99999999999999999999', 'USD')).toThrow(
      "more than any platform's budget field holds",
    );
    expect(() => parseAmount('1.0005', 'KWD')).toThrow('KWD has 3 digits after the decimal point');
  });

  it('prints micros with the currency’s digits, and keeps a remainder rather than hide it', () => {
    expect(formatMicros(75_500_000n, 'USD')).toBe('75.50');
    expect(formatMicros(5_000_000_000n, 'JPY')).toBe('5000');
    expect(formatMicros(1_234_567n, 'USD')).toBe('1.234567');
    expect(displayMoney(1_234_567_890_000n, 'USD')).toBe('1,234,567.89 USD');
    expect(displayMoney(null, 'USD')).toBeNull();
  });

  it('goes through a double only where the amount survives it exactly', () => {
    expect(microsToNumber(1_234_567_890_000n)).toBe(1234567.89);
    expect(microsToNumber(10_000n)).toBe(0.01);
    expect(numberToMicros(0.1)).toBe(100_000n);
    expect(numberToMicros(1234567.89)).toBe(1_234_567_890_000n);
    const huge = 123_456_789_012_345_678_901n;
    expect(numberToMicros(microsToNumber(huge))).not.toBe(huge);
  });

  it('takes micros from a library caller as a bigint, a safe integer or digits, more than zero', () => {
    expect(toMicros(75_500_000n)).toBe(75_500_000n);
    expect(toMicros(75_500_000)).toBe(75_500_000n);
    expect(toMicros('75500000')).toBe(75_500_000n);
    expect(() => toMicros(1.5)).toThrow('integer number of micros');
    expect(() => toMicros('75.5')).toThrow('integer number of micros');
    expect(() => toMicros(0n)).toThrow('more than zero');
    expect(() => toMicros(-5)).toThrow('more than zero');
  });
});
