import { describe, expect, it } from 'vitest';
import { canonical, rowHash } from '../../src/services/audit.js';

// Rows written by every earlier credvault must keep verifying: these hashes were computed by the
// first implementation of the chain (Object.entries, filter, sort, createHash) and must never change.
const rows = [
  {
    id: 1,
    occurredAt: new Date('2026-11-26T12:34:56.789Z'),
    actor: 'operator',
    action: 'token.serve',
    targetType: 'connection',
    targetId: 'c1',
    connectionId: '5d7c0c8e-2b8e-4d8e-9b1e-000000000001',
    clientAddress: null,
    userAgent: 'curl/8 "quoted" ü',
    outcome: 'success',
    detail: {
      z: 1,
      a: [3, { y: undefined, b: 'é', a: null }],
      m: { k: true, Z: 'x' },
      when: new Date('2026-01-01T00:00:00Z'),
    },
    prevHash: '0'.repeat(64),
  },
  {
    id: 2,
    occurredAt: new Date('2026-11-26T12:34:56.789Z'),
    actor: 'client:ci',
    action: 'x',
    targetType: 't',
    targetId: null,
    connectionId: null,
    clientAddress: '::1',
    userAgent: null,
    outcome: 'denied',
    detail: {},
    prevHash: 'f'.repeat(64),
  },
];

describe('audit chain hashes', () => {
  it('are the ones earlier versions wrote', () => {
    expect(rows.map((row) => rowHash(row))).toEqual([
      'ba19ed427d83085c4550c5ccd85af9acfd0b07901f4fef31ee54fbb471a99b61',
      'cc74cfff2f1ee00418a3221a156b689facade464724644c956c65629ba5f544e',
    ]);
  });

  it('do not depend on key order (jsonb reorders keys), and drop undefined values', () => {
    expect(canonical(rows[0]!.detail)).toBe(
      '{"a":[3,{"a":null,"b":"é"}],"m":{"Z":"x","k":true},"when":"2026-01-01T00:00:00.000Z","z":1}',
    );
    expect(canonical({ b: 1, a: { d: 2, c: undefined } })).toBe(canonical({ a: { d: 2 }, b: 1 }));
    const moved = { ...rows[1]!, detail: { b: 2, a: 1 } };
    expect(rowHash(moved)).toBe(rowHash({ ...moved, detail: { a: 1, b: 2 } }));
    expect(rowHash(moved)).not.toBe(rowHash({ ...moved, detail: { a: 1, b: 3 } }));
  });
});
