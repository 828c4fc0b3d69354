/**
 * A DATABASE_URL as messages, logs and the daemon's run file name it: without its password, also
 * one given as a query parameter (libpq takes `?password=…`, `?sslpassword=…`); null when it does
 * not parse. Light on purpose: `token get`'s fast path loads it.
 */
export function urlWithoutPassword(url: string): string | null {
  try {
    // libpq's `postgres://user@/db?host=/folder` has no host, which URL refuses with a user name: read
    // with a stand-in host, taken out again below.
    const text = url.trim();
    const emptyHost = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@(?=[/?#]|$)/i.test(text);
    const parsed = new URL(emptyHost ? text.replace(/@(?=[/?#]|$)/, '@localhost') : text);
    parsed.password = '';
    for (const name of [...parsed.searchParams.keys()])
      if (/pass|secret|token/i.test(name)) parsed.searchParams.delete(name);
    const shown = parsed.toString();
    return emptyHost ? shown.replace(/@localhost(?=[/?#]|$)/, '@') : shown;
  } catch {
    return null;
  }
}

/**
 * Whether a URL carries a password (in its user information, or as libpq's `?password=`): on a
 * command line, where every user of the machine can read it (`ps`), that is refused.
 */
export function urlHasPassword(url: string): boolean {
  const text = url.trim();
  try {
    // As urlWithoutPassword reads it: libpq's empty host (`u@/db?host=/x`) with a stand-in.
    const emptyHost = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@(?=[/?#]|$)/i.test(text);
    const parsed = new URL(emptyHost ? text.replace(/@(?=[/?#]|$)/, '@localhost') : text);
    return (
      parsed.password !== '' ||
      Boolean(parsed.searchParams.get('password')) ||
      Boolean(parsed.searchParams.get('sslpassword'))
    );
  } catch {
    // Not a URL as given (a password with / ? # in it, several hosts): anything before the last @
    // with a colon in it may be one.
    const rest = text.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
    return /:[^@]+@/.test(rest.slice(0, rest.lastIndexOf('@') + 1)) || /[?&](ssl)?password=[^&#]/i.test(rest);
  }
}

/**
 * How postgres.js is to connect for one DATABASE_URL: the URL it is given, and, where it would read
 * the URL wrong, the host and port (or the unix socket) given apart.
 */
export interface PostgresConnection {
  url: string;
  host?: string[];
  port?: number[];
  /** A unix socket file: libpq's `?host=/folder` (Cloud SQL's form), or a PGHOST that is a folder. */
  path?: string;
}

/**
 * Reads DATABASE_URL as libpq would, or says why it cannot (`problem`, `hint`): never with the URL
 * itself, whose password could be in the wrong place. postgres.js parses a URL itself, and throws a
 * bare "Invalid URL" on one it cannot read, splits an IPv6 literal host (`[::1]`) at its first colon
 * (porsager/postgres#663), and takes neither an empty host nor libpq's `?host=/folder`: those three are
 * handed to it apart. Any other URL goes to it as it was given.
 */
/** libpq's sslmode values, which postgres.js takes. */
const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

export function readDatabaseUrl(
  raw: string,
  env: Record<string, string | undefined> = process.env,
): PostgresConnection | { problem: string; hint: string } {
  const url = raw.trim();
  const encode =
    'Percent-encode the user name and password in DATABASE_URL (/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A, % as %25).';
  const rest = url.slice(url.indexOf('://') + 3);
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd);
  const lastAt = rest.lastIndexOf('@');
  // postgres.js decodes the user name, the password and the host, and a % that begins no escape
  // (`50%off` for `50%25off`) makes it throw a bare "URI malformed".
  try {
    decodeURIComponent(authority);
  } catch {
    return {
      problem: 'DATABASE_URL has a % in its user name, password or host that is not percent-encoding',
      hint: encode,
    };
  }
  // `postgres://user:pa/ss@host/db`: the host is read as "user", the rest as a path (or a query, or a
  // fragment). An @ past the end of the authority, before any query parameter's `=`, betrays it.
  if (
    authorityEnd !== -1 &&
    !authority.includes('@') &&
    lastAt > authorityEnd &&
    !rest.slice(authorityEnd, lastAt).includes('=')
  ) {
    return {
      problem: 'DATABASE_URL has a /, ? or # in its user name or password',
      hint: encode,
    };
  }
  // postgres.js takes any other sslmode for a check of the certificate (verify-full), silently: a
  // typo, or node-postgres's `no-verify`, would fail later as a certificate error.
  const sslmode = /[?&]sslmode=([^&#]*)/.exec(url)?.[1];
  if (sslmode !== undefined && !SSL_MODES.includes(decodeURIComponent(sslmode))) {
    return {
      problem: `DATABASE_URL has sslmode=${sslmode.slice(0, 40)}, which is not one of ${SSL_MODES.join(', ')}`,
      hint: 'Give one of those (require encrypts without checking the certificate; verify-full checks it).',
    };
  }
  // Several hosts (`h1:5432,h2:5432`), which URL cannot read: postgres.js reads them itself.
  if (authority.slice(authority.lastIndexOf('@') + 1).includes(',')) return { url };
  // libpq's `postgres://user@/db?host=/folder` (and `postgres:///db`): no host in the authority, which
  // a URL with a user name may not have. Read with a stand-in host, then told apart below.
  const emptyHost = authority === '' || authority.endsWith('@');
  let parsed: URL;
  try {
    parsed = new URL(emptyHost ? url.replace(`://${authority}`, `://${authority}localhost`) : url);
  } catch {
    const port = /:(\d+)$/.exec(authority.slice(authority.lastIndexOf('@') + 1))?.[1];
    if (port && Number(port) > 65535) {
      return {
        problem: `DATABASE_URL has port ${port}, over the highest there is (65535)`,
        hint: 'Give the port PostgreSQL listens on (5432 unless it was changed).',
      };
    }
    return { problem: 'DATABASE_URL cannot be read as a URL', hint: encode };
  }
  // libpq's `?host=` and `?port=`, which postgres.js would send the server as settings of the session.
  const hostParam = parsed.searchParams.get('host');
  const portParam = parsed.searchParams.get('port');
  const ipv6 = parsed.hostname.startsWith('[');
  if (hostParam === null && portParam === null && !ipv6 && !emptyHost) return { url };
  if (portParam !== null && !(/^\d{1,5}$/.test(portParam) && Number(portParam) <= 65535)) {
    return {
      problem: `DATABASE_URL has port=${portParam}, which is not a port (1 to 65535)`,
      hint: 'Give the port PostgreSQL listens on (5432 unless it was changed).',
    };
  }
  parsed.searchParams.delete('host');
  parsed.searchParams.delete('port');
  const port = Number(portParam || parsed.port || env.PGPORT || 5432);
  const host = hostParam || (emptyHost ? env.PGHOST || 'localhost' : parsed.hostname.replace(/^\[|\]$/g, ''));
  return {
    url: parsed.toString(),
    host: [host],
    port: [port],
    ...(host.startsWith('/') ? { path: `${host}/.s.PGSQL.${port}` } : {}),
  };
}
