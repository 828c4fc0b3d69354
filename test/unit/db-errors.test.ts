import { describe, expect, it } from 'vitest';
import { databaseFailure, mapDatabaseError } from '../../src/db/errors.js';

const socketError = (code: string, syscall: string) =>
  Object.assign(new Error(`${syscall} ${code} /home/u/.local/share/credvault/run/.s.PGSQL.5432`), {
    code,
    syscall,
  });

describe('database errors as the contract says them', () => {
  it('a unix socket gone under a command (the daemon stopped) is the database unreachable, exit 8', () => {
    for (const [code, syscall] of [
      ['ENOENT', 'connect'],
      ['EPIPE', 'write'],
    ] as const) {
      const mapped = mapDatabaseError(socketError(code, syscall), '/home/u/.local/share/credvault/pgdata');
      expect(mapped?.exitCode).toBe(8);
      expect(mapped?.hint).toContain('daemon that shares the embedded database may have stopped');
    }
  });

  it("a TCP connection PostgreSQL's side closed (EPIPE, no syscall) is the database unreachable", () => {
    const ended = Object.assign(new Error('This socket has been ended by the other party'), {
      code: 'EPIPE',
    });
    const mapped = mapDatabaseError(ended, 'postgres://db.example/credvault');
    expect(mapped?.exitCode).toBe(8);
    expect(mapped?.message).toContain('cannot reach the database at postgres://db.example/credvault');
  });

  it('55000 is the database unreachable only when the server says it takes no connections', () => {
    const pg = (message: string) => Object.assign(new Error(message), { code: '55000' });
    const refusing = mapDatabaseError(
      pg('database "credvault" is not currently accepting connections'),
      'postgres://db.example/credvault',
    );
    expect(refusing?.exitCode).toBe(8);
    // Within a session it means something else: a bug to report, not a server to check.
    expect(
      mapDatabaseError(pg('currval of sequence "s" is not yet defined in this session'), 'postgres://db'),
    ).toBeNull();
  });

  it("a full disk (SQLSTATE 53100) is exit 8 naming the database's folder, or the server's disk", () => {
    const full = Object.assign(new Error('could not extend file "base/5/16411": No space left on device'), {
      code: '53100',
    });
    const embedded = mapDatabaseError(full, '/home/u/.local/share/credvault/pgdata');
    expect(embedded?.exitCode).toBe(8);
    expect(embedded?.message).toContain(
      'the disk that holds the database at /home/u/.local/share/credvault/pgdata is full',
    );
    expect(embedded?.hint).toContain('Free space on the disk that holds /home/u/.local/share/credvault');
    const server = mapDatabaseError({ cause: full }, 'postgres://db.example/credvault');
    expect(server?.exitCode).toBe(8);
    expect(server?.hint).toContain("PostgreSQL server's data disk");
  });

  it('a file that is not there is not the database', () => {
    expect(mapDatabaseError(socketError('ENOENT', 'open'), '/h/pgdata')).toBeNull();
  });
});

describe('what a failure says of the database, for the daemon’s log', () => {
  const driver = (code: string, message = code) => ({ cause: Object.assign(new Error(message), { code }) });
  it('tells an unreachable database, one too slow, and one refusing the operation apart', () => {
    expect(databaseFailure(driver('ECONNRESET', 'read ECONNRESET'))).toBe('the database is unreachable');
    expect(databaseFailure(driver('ECONNREFUSED'))).toBe('the database is unreachable');
    // A connection the daemon dropped because its answers stopped (db/client.ts).
    expect(
      databaseFailure(
        driver('CONNECTION_DESTROYED', 'the database did not answer for 35 s; connection dropped'),
      ),
    ).toBe('the database did not answer in time');
    expect(databaseFailure(driver('57014', 'canceling statement due to statement timeout'))).toBe(
      'the database did not answer in time',
    );
    expect(databaseFailure(driver('42501', 'audit is read-only'))).toBe('the database refused the operation');
    expect(databaseFailure(driver('55000', 'currval of sequence "s" is not yet defined'))).toBeNull();
    expect(databaseFailure(new Error('a bug'))).toBeNull();
  });
});
