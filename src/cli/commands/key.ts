import { InvalidInputError } from '../../errors.js';
import { keyStatus, newMasterKey } from '../../services/keys.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';

/** Prints a new master key alone on stdout, like Fernet.generate_key(). */
export async function generate(rt: Runtime): Promise<void> {
  if (rt.out.json) {
    throw new InvalidInputError(
      'key generate prints the key alone on stdout; it never puts a secret into --json output',
      {
        hint: 'Run it without --json (for example: credvault key generate > master.key).',
      },
    );
  }
  const { key, keyId } = newMasterKey();
  rt.out.raw(key);
  rt.out.note(`key id ${keyId}. Store it in a secret manager or a 0600 file (CREDENTIAL_MASTER_KEY_FILE).`);
}

export async function status(rt: Runtime): Promise<void> {
  const report = await withContext(rt, (ctx) => keyStatus(ctx));
  const { out } = rt;
  if (out.json) return out.writeJson(report);
  out.item(report, [
    ['key source', report.key_source],
    ['from', report.key_origin],
    ['key id', report.key_id],
    [
      'opens this vault',
      report.key_matches_vault === null ? 'no data keys yet' : report.key_matches_vault ? 'yes' : 'NO',
    ],
    ['secrets', report.secrets],
  ]);
  if (report.data_keys.length) {
    out.raw('');
    out.list(report.data_keys, (k) => k, [
      { header: 'DATA KEY', value: (k) => k.id },
      { header: 'SCOPE', value: (k) => k.scope },
      { header: 'STATUS', value: (k) => k.status },
      {
        header: 'WRAPPED BY',
        value: (k) => `${k.kek_kind} ${k.kek_id}`,
        style: (k, text, c) => (k.matches_key ? text : c.red(text)),
      },
      { header: 'SECRETS', value: (k) => k.secrets },
      { header: 'CREATED', value: (k) => k.created_at },
    ]);
  }
}
