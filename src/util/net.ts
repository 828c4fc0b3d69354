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

/**
 * The longest unix socket path the system takes, in bytes: sun_path's 108 on Linux (which needs no
 * closing NUL), 104 less the NUL on macOS and the BSDs. Node cuts a longer path short without a word
 * and listens on that other path, so every socket path is checked against it first.
 */
export const UNIX_SOCKET_PATH_MAX = process.platform === 'linux' ? 108 : 103;

/** Whether the system can listen on (and connect to) a unix socket at `path`. */
export function socketPathFits(path: string): boolean {
  return Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX;
}
