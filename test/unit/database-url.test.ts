import { describe, expect, it } from 'vitest';
import { readDatabaseUrl, urlHasPassword, urlWithoutPassword } from '../../src/util/database-url.js';

/** How DATABASE_URL is handed to postgres.js (see readDatabaseUrl); the CLI tests connect with them. */
describe('readDatabaseUrl', () => {
  const env = {};

  it('hands an ordinary URL, or several hosts, to the driver as given', () => {
    for (const url of [
      'postgres://u:p%2Fw@db.internal:5432/credvault?sslmode=require',
      'postgres://u@h1:5432,h2:5433/credvault',
    ])
      expect(readDatabaseUrl(url, env)).toEqual({ url });
  });

  it('refuses an sslmode libpq does not have (a typo, node-postgres’s no-verify), which the driver would take for verify-full', () => {
    for (const mode of ['bogus', 'no-verify', 'requre']) {
      const read = readDatabaseUrl(`postgres://u:secret-pw@db/x?sslmode=${mode}`, env);
      expect(read).toMatchObject({
        problem: expect.stringContaining(`sslmode=${mode}, which is not one of`),
      });
      expect(JSON.stringify(read)).not.toContain('secret-pw');
    }
    for (const mode of ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'])
      expect(readDatabaseUrl(`postgres://u@db/x?sslmode=${mode}`, env)).not.toHaveProperty('problem');
  });

  it('gives an IPv6 host without its brackets, and its port, apart', () => {
    expect(readDatabaseUrl('postgres://u@[::1]:6543/db', env)).toMatchObject({ host: ['::1'], port: [6543] });
    expect(readDatabaseUrl('postgres://u@[fe80::1]/db', { PGPORT: '5433' })).toMatchObject({
      host: ['fe80::1'],
      port: [5433],
    });
  });

  it("takes libpq's socket folder (?host=/folder, ?port=) as the socket file, not as settings", () => {
    const read = readDatabaseUrl('postgres://u:pw@/db?host=/cloudsql/p:r:i&port=6432&sslmode=disable', env);
    expect(read).toMatchObject({ path: '/cloudsql/p:r:i/.s.PGSQL.6432', port: [6432] });
    expect('url' in read && new URL(read.url).searchParams.get('host')).toBe(null);
    expect('url' in read && new URL(read.url).searchParams.get('sslmode')).toBe('disable');
    expect(readDatabaseUrl('postgres:///db', { PGHOST: '/var/run/postgresql' })).toMatchObject({
      path: '/var/run/postgresql/.s.PGSQL.5432',
    });
    expect(urlWithoutPassword('postgres://u:pw@/db?host=/x')).toBe('postgres://u@/db?host=/x');
  });

  it('says what is wrong with a URL it cannot read, without the URL', () => {
    const problems = [
      'postgres://u:hunter2/x@db.internal/db',
      'postgres://u:4242#hunter2@db.internal/db',
      'postgres://u:hunter2?x@db.internal/db',
      'postgres://u:hunter2@db.internal:99999/db',
      'postgres://u:hunter2@db.internal/db?port=http',
      'postgres://u:50%hunter2@db.internal/db',
      'postgres://u:hunter2%@db.internal/db',
      'postgres://u:hunter2%zz@db.internal/db',
    ].map((url) => readDatabaseUrl(url, env));
    for (const read of problems) {
      expect(read).toHaveProperty('problem');
      expect(JSON.stringify(read)).not.toMatch(/hunter2|4242|db\.internal/);
    }
    // An @ in a query parameter's value is not taken for one in the password.
    expect(readDatabaseUrl('postgres://h/db?application_name=a@b', env)).toEqual({
      url: 'postgres://h/db?application_name=a@b',
    });
  });

  it('tells a URL that carries a password (for --database-url, which refuses one)', () => {
    for (const url of [
      'postgres://u:pw@h/db',
      'postgres://u:abc123==@h:5432/db',
      'postgres://u:a=b@h:5432/db?sslmode=require',
      'postgres://u@h/db?sslmode=require&password=pw',
      'postgres://u@h/db?sslpassword=pw',
      'postgres://u:pw@h1:5432,h2:5433/db',
      'postgres://u:pa/ss@h/db',
      'postgres://u:pw@/db?host=/var/run/postgresql',
    ])
      expect(urlHasPassword(url), url).toBe(true);
    for (const url of [
      'postgres://u@h/db',
      'postgres://u:@h/db',
      'postgres://h/db?application_name=a@b:c',
      'postgres://u@h/db?password=',
      'postgres://u@h1:5432,h2:5433/db',
      'postgres://u@/db?host=/var/run/postgresql',
      'postgres://u@[::1]:5432/db',
    ])
      expect(urlHasPassword(url), url).toBe(false);
  });
});
