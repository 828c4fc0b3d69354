/** `ms` spread by ±`spread` at random, so that retries from many processes do not line up. */
export function jitter(ms: number, spread = 0.2): number {
  return Math.round(ms * (1 - spread + Math.random() * 2 * spread));
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
