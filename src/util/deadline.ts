/**
 * Runs `fn` with a signal that aborts after `ms` as AbortSignal.timeout's does (a TimeoutError), and
 * clears the timer as soon as `fn` settles. AbortSignal.timeout keeps its signal and timer alive for
 * the whole timeout even when the request answered at once: a daemon's sweep of hundreds of refreshes
 * a second would hold thousands of them.
 */
export async function withDeadline<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
    ms,
  );
  try {
    return await fn(controller.signal);
  } finally {
    clearTimeout(timer);
  }
}
