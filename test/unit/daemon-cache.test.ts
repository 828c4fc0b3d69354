import { describe, expect, it } from 'vitest';
import { type CachedToken, DaemonCache } from '../../src/daemon/cache.js';
import type { ClientRow } from '../../src/db/store/clients.js';
import type { ConnectionRow } from '../../src/db/store/connections.js';

/** The daemon's memory answers only while it hears every change (see listenForChanges). */
describe('DaemonCache', () => {
  const connection = { id: 'c1', tokenId: 'g1', status: 'active', name: 'acct-a' } as ConnectionRow;
  const token = { grantId: 'g1', version: 1 } as CachedToken;
  const client = { id: 'k1', revokedAt: null, expiresAt: null } as ClientRow;

  const filled = () => {
    const cache = new DaemonCache();
    const since = cache.mark();
    cache.rememberConnection('acct-a', connection, since);
    cache.rememberToken(token, since);
    cache.rememberClient('hash', client, since);
    return cache;
  };

  it('suspended, misses on every lookup and keeps what it holds; resumed, answers it again', () => {
    const cache = filled();
    cache.suspend();
    expect(cache.serving).toBe(false);
    expect([cache.connectionByRef('acct-a'), cache.token('g1'), cache.client('hash')]).toEqual([
      null,
      null,
      null,
    ]);
    cache.resume();
    expect(cache.connectionByRef('acct-a')).toBe(connection);
    expect(cache.token('g1')).toBe(token);
    expect(cache.client('hash')).toBe(client);
  });

  it('remembers nothing read while suspended, even once resumed', () => {
    const cache = new DaemonCache({ serving: false });
    const since = cache.mark();
    cache.rememberConnection('acct-a', connection, since);
    cache.resume();
    cache.rememberToken(token, since);
    cache.rememberClient('hash', client, since);
    expect([cache.connectionByRef('acct-a'), cache.token('g1'), cache.client('hash')]).toEqual([
      null,
      null,
      null,
    ]);
  });

  it('does not remember what was read before a change whose notification came before it was stored', () => {
    for (const change of [
      (cache: DaemonCache) => cache.invalidate('connection:c1'),
      (cache: DaemonCache) => cache.invalidate('client:other'),
      (cache: DaemonCache) => cache.clear(),
      (cache: DaemonCache) => {
        cache.suspend();
        cache.resume();
      },
    ]) {
      const cache = new DaemonCache();
      const since = cache.mark();
      change(cache);
      cache.rememberConnection('acct-a', connection, since);
      cache.rememberToken(token, since);
      cache.rememberClient('hash', client, since);
      expect([cache.connectionByRef('acct-a'), cache.token('g1'), cache.client('hash')]).toEqual([
        null,
        null,
        null,
      ]);
    }
  });

  it('remembers a connection only under its own refs (id, name, PLATFORM:ACCOUNT), not under any ref a client sends', () => {
    const row = {
      id: '6f1c1a52-5b7e-4c3f-9a55-2f0d7e8d6b11',
      tokenId: 'g2',
      status: 'active',
      name: 'acme-eu',
      platform: 'google_ads',
      externalAccountId: '1234567890',
    } as ConnectionRow;
    const cache = new DaemonCache();
    // What resolves to it (resolveConnection trims, reads an id in any case and google-ads:…), a
    // thousand ways: none is kept, so what the cache holds is bounded by the vault, not by requests.
    const others = [
      ' acme-eu',
      'acme-eu\t',
      '\vacme-eu ',
      row.id.toUpperCase(),
      'google-ads:1234567890',
      'GOOGLE_ADS:123-456-7890',
      ...Array.from({ length: 1000 }, (_, i) => `${' '.repeat(i + 1)}acme-eu`),
    ];
    for (const ref of others) cache.rememberConnection(ref, row, cache.mark());
    for (const ref of others) expect(cache.connectionByRef(ref), JSON.stringify(ref)).toBeNull();
    for (const ref of ['acme-eu', row.id, 'google_ads:1234567890']) {
      cache.rememberConnection(ref, row, cache.mark());
      expect(cache.connectionByRef(ref), ref).toBe(row);
    }
  });
});
