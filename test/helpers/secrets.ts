import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { TestVault } from './vault.js';

/** A recognisable secret string: unique per call, so a scan cannot match something else by chance. */
export function fakeSecret(kind: string): string {
  return `${kind}-${randomBytes(12).toString('hex')}`;
}

/**
 * Fails if any of `secrets` appears in what the binary printed, in any table (the audit log included),
 * or in the embedded database's raw files.
 */
export async function expectNoSecretsLeaked(vault: TestVault, secrets: string[], extraText: string[] = []) {
  expect(secrets.length).toBeGreaterThan(0);
  const printed = [...vault.printed, ...extraText].join('\n');
  const dump = await vault.dump();
  const files = vault.rawDatabaseFiles();
  for (const secret of secrets) {
    expect(printed, `printed output contains ${secret}`).not.toContain(secret);
    expect(dump, `a table contains ${secret}`).not.toContain(secret);
    const needle = Buffer.from(secret, 'utf8');
    for (const file of files) expect(file.includes(needle), `a database file contains ${secret}`).toBe(false);
  }
}
