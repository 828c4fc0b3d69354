const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_NAMES.has(hostname.toLowerCase()) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * A URL as it may be quoted in an error: whatever stands before an @ in it (user:password) left out,
 * and with `withQuery: false` its query and fragment too (a callback's carry the authorization code).
 */
export function quotableUrl(raw: string, { withQuery = true }: { withQuery?: boolean } = {}): string {
  const shown = raw.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/?#]*@/i, '$1…@');
  return withQuery ? shown : shown.replace(/[?#][\s\S]*$/, '?…');
}
