import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { postgresGuard } from '../../scripts/postgres-guard.mjs';
import { ROOT } from '../helpers/paths.js';
import { createVault, DB_KIND, type TestVault } from '../helpers/vault.js';

/**
 * postgres.js as credvault ships it (bundled with scripts/postgres-guard.mjs): a connection whose
 * PostgreSQL session is terminated under a query fails that query with CONNECTION_CLOSED, which
 * credvault reports as exit 8, instead of ending the process with a TypeError thrown from a timer.
 * The same script bundled without the guard shows the upstream bug is still there to guard against.
 */
const SCRIPT = `
import postgres from 'postgres';
const url = process.env.URL;
const admin = postgres(url, { max: 1, onnotice: () => {} });
const sql = postgres(url, { max: 1, onnotice: () => {} });
const reserved = await sql.reserve();
const [{ pid }] = await reserved\`select pg_backend_pid() as pid\`;
await admin\`select pg_terminate_backend(\${pid})\`;
// Gone on the server, and the client has had time to see its connection close.
while ((await admin\`select 1 from pg_stat_activity where pid = \${pid}\`).length)
  await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 500));
try {
  await reserved\`select 1\`;
  console.log('answered');
} catch (error) {
  console.log('failed', error.code);
}
await admin.end();
await sql.end({ timeout: 1 });
`;

describe.runIf(DB_KIND === 'postgres')('the PostgreSQL driver as bundled', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credvault-driver-'));
  const made: TestVault[] = [];
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    for (const v of made) await v.destroy();
  });
  const bundle = async (name: string, plugins: Plugin[]) => {
    const outfile = join(dir, `${name}.mjs`);
    await build({
      stdin: { contents: SCRIPT, resolveDir: ROOT, loader: 'js' },
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      outfile,
      plugins,
      banner: {
        js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
      },
      logLevel: 'silent',
    });
    return outfile;
  };
  const run = (file: string, url: string) =>
    spawnSync(process.execPath, [file], {
      env: { ...process.env, URL: url },
      encoding: 'utf8',
      timeout: 60_000,
    });

  it('fails a query on a terminated session with CONNECTION_CLOSED, where upstream ends the process', async () => {
    const v = await createVault();
    made.push(v);
    const guarded = run(await bundle('guarded', [postgresGuard]), v.databaseUrl!);
    expect(guarded.stderr).not.toContain('TypeError');
    expect(guarded.stdout.trim(), guarded.stderr).toBe('failed CONNECTION_CLOSED');
    expect(guarded.status).toBe(0);
    const upstream = run(await bundle('upstream', []), v.databaseUrl!);
    expect(upstream.status).not.toBe(0);
    expect(upstream.stderr).toContain("TypeError: Cannot read properties of null (reading 'write')");
  });
});
