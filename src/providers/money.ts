import { InvalidInputError, quoted } from '../errors.js';

/**
 * Money as the platforms take it, exactly: amounts are integers of micros (a millionth of the
 * currency unit) in a bigint, parsed from and printed to decimal strings without passing through a
 * floating-point number. The digits after the point a currency has (USD 2, JPY 0, KWD 3) are ISO
 * 4217's. Not ICU's: Intl reports the digits used in cash, 0 for HUF, IDR, COP, PKR or IQD, whose
 * ISO exponent (what the ad platforms bill in) is 2, or 3 for IQD.
 */

const MICROS_PER_UNIT = 1_000_000n;

const CURRENCY = /^[A-Z]{3}$/;

/** ISO 4217 exponents other than 2, for the active currencies. */
const ISO_EXPONENTS: Record<string, number> = {
  ...Object.fromEntries(
    [
      'BIF',
      'CLP',
      'DJF',
      'GNF',
      'ISK',
      'JPY',
      'KMF',
      'KRW',
      'PYG',
      'RWF',
      'UGX',
      'UYI',
      'VND',
      'VUV',
      'XAF',
      'XOF',
      'XPF',
    ].map((c) => [c, 0]),
  ),
  ...Object.fromEntries(['BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND'].map((c) => [c, 3])),
  CLF: 4,
  UYW: 4,
};

let known: Set<string> | null = null;

/**
 * Codes an ad platform may still bill in that this Node's ICU does not list: the bolívar fuerte,
 * replaced by VES in 2018 and still in Microsoft Advertising's currency table.
 */
const NOT_IN_ICU = ['VEF'];

/** Digits after the decimal point of a currency (its minor unit, ISO 4217's exponent). */
export function minorDigits(currency: string): number {
  // ISO's own table first: CLF, UYI and UYW are in it and not in every ICU.
  known ??= new Set([...Intl.supportedValuesOf('currency'), ...Object.keys(ISO_EXPONENTS), ...NOT_IN_ICU]);
  if (!CURRENCY.test(currency) || !known.has(currency)) {
    throw new InvalidInputError(`"${currency}" is not an ISO 4217 currency code`);
  }
  return ISO_EXPONENTS[currency] ?? 2;
}

/** The smallest amount a currency can express, in micros (USD: 10,000; JPY: 1,000,000). */
function minorUnitMicros(currency: string): bigint {
  return 10n ** BigInt(6 - minorDigits(currency));
}

const AMOUNT = /^(\d+)(?:\.(\d+))?$/;
const GROUPED = /^\d{1,3}(?:,\d{3})+(?:\.\d+)?$/;
/** "1,500": a thousands separator, or a decimal comma (one and a half)? Said in full, it is clear. */
const AMBIGUOUS = /^\d{1,3},\d{3}$/;
/** The most any platform's budget field holds: micros as a signed 64-bit integer (Google's int64). */
const MAX_MICROS = 2n ** 63n - 1n;

/**
 * An amount as an operator types it ("75", "75.5", "1,234,567.89") in `currency`, as micros. More
 * digits after the point than the currency has (JPY "1000.5", USD "1.005") is refused, not rounded.
 */
export function parseAmount(text: string, currency: string): bigint;
/** Without a currency (not known yet): the amount's form alone, in micros of whatever it will be. */
export function parseAmount(text: string, currency: null): bigint;
export function parseAmount(text: string, currency: string | null): bigint {
  const trimmed = text.trim();
  if (AMBIGUOUS.test(trimmed)) {
    const [whole, part] = trimmed.split(',') as [string, string];
    const decimal = `${whole}.${part.replace(/0+$/, '') || '0'}`;
    throw new InvalidInputError(
      `${quoted(text)} could be ${whole}${part} or ${decimal}: a comma is read as a thousands separator only in an amount that cannot be taken for a decimal comma`,
      { hint: `Write it without the comma: ${whole}${part}, or ${decimal}.` },
    );
  }
  const plain = GROUPED.test(trimmed) ? trimmed.replace(/,/g, '') : trimmed;
  const match = AMOUNT.exec(plain);
  if (!match) {
    throw new InvalidInputError(`${quoted(text)} is not an amount`, {
      hint: `Give the amount in ${currency ?? "the account's currency"} as digits with an optional decimal point, for example 75 or 1234.50.`,
    });
  }
  const digits = currency === null ? Number.POSITIVE_INFINITY : minorDigits(currency);
  const fraction = (match[2] ?? '').replace(/0+$/, '');
  if (fraction.length > digits) {
    throw new InvalidInputError(
      digits === 0
        ? `${currency} has no minor unit: ${quoted(text)} cannot be charged`
        : `${currency} has ${digits} digits after the decimal point: ${quoted(text)} cannot be charged`,
      {
        hint:
          digits === 0
            ? `Give a whole number of ${currency}.`
            : `Give at most ${digits} digit${digits === 1 ? '' : 's'} after the decimal point.`,
      },
    );
  }
  const micros = BigInt(match[1]!) * MICROS_PER_UNIT + BigInt((fraction || '0').padEnd(6, '0'));
  if (micros <= 0n) throw new InvalidInputError('a daily budget must be more than zero');
  if (micros > MAX_MICROS) {
    throw new InvalidInputError(`${quoted(text)} is more than any platform's budget field holds`, {
      hint: 'Check the amount: it is per day, in the account’s currency.',
    });
  }
  return micros;
}

/** Micros as a decimal string with exactly the currency's digits ("75.00", "1000" for JPY). */
export function formatMicros(micros: bigint, currency: string): string {
  const digits = minorDigits(currency);
  const negative = micros < 0n;
  const abs = negative ? -micros : micros;
  const whole = abs / MICROS_PER_UNIT;
  const rest = (abs % MICROS_PER_UNIT).toString().padStart(6, '0');
  // Keep every digit the platform sent beyond the currency's own, rather than hide a remainder.
  const extra = rest.slice(digits).replace(/0+$/, '');
  const fraction = rest.slice(0, digits) + extra;
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** For display: "1,234.50 USD". */
export function displayMoney(micros: bigint | null, currency: string | null): string | null {
  if (micros === null) return null;
  if (!currency) return `${micros} micros`;
  const [whole, fraction] = formatMicros(micros, currency).split('.');
  return `${BigInt(whole!).toLocaleString('en')}${fraction ? `.${fraction}` : ''} ${currency}`;
}

/** A decimal string ("75.00", "0.05", "1234567.89") as micros, exactly. */
export function decimalToMicros(value: string): bigint {
  const match = /^(-?)(\d+)(?:\.(\d{1,6})0*)?$/.exec(value.trim());
  if (!match) throw new InvalidInputError(`${quoted(value)} is not a decimal amount`);
  const micros = BigInt(match[2]!) * MICROS_PER_UNIT + BigInt((match[3] ?? '').padEnd(6, '0') || '0');
  return match[1] ? -micros : micros;
}

/**
 * A JSON number in currency units from micros, for APIs that take a double (Microsoft's
 * DailyBudget): the shortest decimal that round-trips, built from the exact decimal string.
 */
export function microsToNumber(micros: bigint): number {
  const abs = micros < 0n ? -micros : micros;
  const text = `${abs / MICROS_PER_UNIT}.${(abs % MICROS_PER_UNIT).toString().padStart(6, '0')}`;
  return micros < 0n ? -Number(text) : Number(text);
}

/**
 * A double from an API (Microsoft's DailyBudget) as micros: through its shortest decimal string,
 * which is what the platform stored (0.1 arrives as 0.1, not 0.1000000000000000055…).
 */
export function numberToMicros(value: number): bigint {
  if (!Number.isFinite(value)) throw new InvalidInputError(`${value} is not an amount`);
  const text = Math.abs(value) < 1e-6 ? '0' : value.toFixed(6);
  return decimalToMicros(text);
}

/** Whether micros are a whole number of the currency's smallest unit. */
export function isWholeMinorUnits(micros: bigint, currency: string): boolean {
  return micros % minorUnitMicros(currency) === 0n;
}

/** Parses an integer of micros given by a library caller: a bigint, a safe integer, or digits. */
export function toMicros(value: bigint | number | string, what = 'dailyBudgetMicros'): bigint {
  let micros: bigint;
  if (typeof value === 'bigint') micros = value;
  else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value))
      throw new InvalidInputError(`${what} must be an integer number of micros`);
    micros = BigInt(value);
  } else {
    if (!/^\d+$/.test(value))
      throw new InvalidInputError(`${what} must be an integer number of micros, not ${quoted(value)}`);
    micros = BigInt(value);
  }
  if (micros <= 0n) throw new InvalidInputError(`${what} must be more than zero`);
  // As parseAmount (the CLI's path) refuses it: past an int64 of micros, LinkedIn's decimal-string
  // amount would carry it, simulated as valid and then applied.
  if (micros > MAX_MICROS) {
    throw new InvalidInputError(`${what} ${micros} is more than any platform's budget field holds`, {
      hint: 'Check the amount: it is per day, in micros of the account’s currency (1 USD = 1,000,000).',
    });
  }
  return micros;
}
