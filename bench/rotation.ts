// Master-key rotation of a vault holding 100,000 secrets (50,000 grants, each with its own data key and
// an access and a refresh token) on PostgreSQL: `key rotate` (re-wraps the data keys only) and
// `key rotate --reencrypt` (new data keys, every secret re-encrypted). Baselines, same run, same
// database: one UPDATE rewriting every data key row, and one rewriting every token row, which is the
// least any rotation of them costs.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { Keyring } from '../src/crypto/envelope.js';
import { generateMasterKey, LocalKeySource } from '../src/crypto/local-key.js';
import { grantSlot } from '../src/services/grants.js';
import { ratio, runCli, scratchDatabase, scratchHome } from './lib.js';

const GRANTS = 50_000;
const SECRETS = GRANTS * 2;

/** Grants written straight into the tables, encrypted by credvault's own envelope code. */
export async function seed(sql: postgres.Sql, home: string, appId: string, count = GRANTS): Promise<void> {
  const source = LocalKeySource.fromText(readFileSync(join(home, 'master.key'), 'utf8'), 'bench');
  const keyring = new Keyring(source, async () => null);
  const CHUNK = 2_500;
  for (let start = 0; start < count; start += CHUNK) {
    const keys: Array<Record<string, string>> = [];
    const grants: Array<Record<string, string | Date>> = [];
    for (let i = start; i < Math.min(count, start + CHUNK); i++) {
      const id = randomUUID();
      const dek = randomUUID();
      const { wrapped } = await keyring.createDataKey(dek);
      keys.push({
        id: dek,
        scope: 'grant',
        wrapped_key: wrapped.wrappedKey,
        kek_id: wrapped.kekId,
        kek_kind: 'local',
      });
      grants.push({
        id,
        platform: 'google_ads',
        app_id: appId,
        data_key_id: dek,
        access_token_enc: await keyring.encrypt(
          `ya29.${randomBytes(60).toString('base64url')}`,
          grantSlot(id, 'access_token_enc'),
          dek,
        ),
        refresh_token_enc: await keyring.encrypt(
          `1//0g${randomBytes(48).toString('base64url')}`,
          grantSlot(id, 'refresh_token_enc'),
          dek,
        ),
        access_token_expires_at: new Date(Date.now() + 3_600_000),
      });
      keyring.forget(dek);
    }
    await sql.begin(async (tx) => {
      await tx`insert into data_keys ${tx(keys)}`;
      await tx`insert into oauth_tokens_vault ${tx(grants)}`;
    });
  }
  await sql`analyze`;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const start = process.hrtime.bigint();
  const result = await fn();
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, result };
}

export async function rotation() {
  const rows: Array<[string, number | string, string, string?]> = [];
  const pg = await scratchDatabase();
  if (!pg) return { title: 'Key rotation (skipped: PostgreSQL not reachable)', rows };
  const { root, home, env, cleanup } = scratchHome(pg.url);
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    await runCli(['init', '--json'], env);
    const app = JSON.parse(
      await runCli(
        ['apps', 'add', 'google_ads', '--from-file', '-', '--json'],
        env,
        JSON.stringify({
          label: 'bench',
          client_id: 'bench.apps.googleusercontent.com',
          client_secret: 'x',
          developer_token: 'y',
        }),
      ),
    ) as { id: string };
    await seed(sql, home, app.id);

    // Baselines: the database rewriting every data key row, then every token row, once.
    const rewriteKeys = await timed(() => sql`update data_keys set rewrapped_at = now()`);
    const rewriteSecrets = await timed(
      () =>
        sql`update oauth_tokens_vault set access_token_enc = access_token_enc || '', refresh_token_enc = refresh_token_enc || ''`,
    );
    await sql`vacuum analyze`;

    const newKey = join(root, 'next.key');
    writeFileSync(newKey, generateMasterKey(), { mode: 0o600 });
    const rotate = await timed(() => runCli(['key', 'rotate', '--new-key-file', newKey, '--json'], env));
    const rewrapped = (JSON.parse(rotate.result) as { data_keys_rewrapped: number }).data_keys_rewrapped;
    if (rewrapped !== GRANTS + 1)
      throw new Error(`key rotate re-wrapped ${rewrapped} data keys, not ${GRANTS + 1}`);
    rows.push(['DB floor: UPDATE every data key row', rewriteKeys.ms, '1.00×']);
    rows.push([
      `key rotate (${GRANTS.toLocaleString('en')} data keys)`,
      rotate.ms,
      ratio(rotate.ms, rewriteKeys.ms),
      'target ≤ 1,000 ms',
    ]);

    const third = join(root, 'third.key');
    writeFileSync(third, generateMasterKey(), { mode: 0o600 });
    const reencrypt = await timed(() =>
      runCli(['key', 'rotate', '--new-key-file', third, '--reencrypt', '--json'], env),
    );
    const report = JSON.parse(reencrypt.result) as { reencrypted: { secrets: number } };
    if (report.reencrypted.secrets !== SECRETS + 2)
      throw new Error(`re-encrypted ${report.reencrypted.secrets} secrets, not ${SECRETS + 2}`);
    const floorRate = SECRETS / (rewriteSecrets.ms / 1000);
    const rate = report.reencrypted.secrets / (reencrypt.ms / 1000);
    rows.push([
      'DB floor: UPDATE every token row',
      `${Math.round(floorRate).toLocaleString('en')} secrets/s`,
      '1.00×',
    ]);
    rows.push([
      `key rotate --reencrypt (${SECRETS.toLocaleString('en')} secrets)`,
      `${Math.round(rate).toLocaleString('en')} secrets/s`,
      ratio(rate, floorRate),
      'target ≥ 5,000 secrets/s',
    ]);
  } finally {
    await sql.end();
    await pg.drop();
    cleanup();
  }
  return { title: 'Key rotation, 100,000 secrets (PostgreSQL)', rows };
}
