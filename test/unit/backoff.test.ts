import { describe, expect, it } from 'vitest';
import { ProviderError } from '../../src/providers/errors.js';
import { retryDelayMs } from '../../src/services/platform-calls.js';
import { jitter } from '../../src/util/backoff.js';

describe('retries back off with jitter, and honour Retry-After', () => {
  it('doubles the wait per attempt from half a second, spread ±50% so that processes do not line up', () => {
    const unavailable = new ProviderError('transient', 'HTTP 503', { status: 503 });
    for (const attempt of [1, 2, 3, 4]) {
      const base = 500 * 2 ** (attempt - 1);
      const waits = Array.from({ length: 200 }, () => retryDelayMs(unavailable, attempt));
      expect(Math.min(...waits)).toBeGreaterThanOrEqual(base * 0.5);
      expect(Math.max(...waits)).toBeLessThanOrEqual(base * 1.5);
      // Spread over the range, not one value: at least a quarter of it apart.
      expect(Math.max(...waits) - Math.min(...waits)).toBeGreaterThan(base * 0.25);
    }
  });

  it("waits exactly what the platform's Retry-After says, without jitter", () => {
    const limited = new ProviderError('rate_limited', 'HTTP 429', { status: 429, retryAfter: 42 });
    expect(new Set(Array.from({ length: 20 }, () => retryDelayMs(limited, 3)))).toEqual(new Set([42_000]));
  });

  it('jitter stays within its spread', () => {
    const values = Array.from({ length: 500 }, () => jitter(1000));
    expect(Math.min(...values)).toBeGreaterThanOrEqual(800);
    expect(Math.max(...values)).toBeLessThanOrEqual(1200);
    expect(new Set(values).size).toBeGreaterThan(50);
  });
});
