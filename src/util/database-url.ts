/**
 * A DATABASE_URL as messages, logs and the daemon's run file name it: without its password, also
 * one given as a query parameter (libpq takes `?password=…`, `?sslpassword=…`); null when it does
 * not parse. Light on purpose: `token get`'s fast path loads it.
 */
export function urlWithoutPassword(url: string): string | null {
  try {
    const parsed = new URL(url.trim());
    parsed.password = '';
    for (const name of [...parsed.searchParams.keys()])
      if (/pass|secret|token/i.test(name)) parsed.searchParams.delete(name);
    return parsed.toString();
  } catch {
    return null;
  }
}
