import { initVault } from '../../services/vault.js';
import type { Runtime } from '../run.js';

export async function init(rt: Runtime): Promise<void> {
  const report = await initVault(rt.config);
  const { out } = rt;
  if (out.json) return out.writeJson(report);
  if (report.created_key_file) {
    out.warn(
      `created a new master key at ${report.created_key_file}. Back it up somewhere safe: without it nothing in this vault can be read.`,
    );
  }
  out.item(report, [
    ['home', report.home],
    ['database', `${report.database} (${report.database_kind === 'pglite' ? 'embedded' : 'PostgreSQL'})`],
    ['key', `${report.key_source} from ${report.key_origin} (key id ${report.key_id})`],
    [
      'migrations applied',
      report.migrations_applied.length ? report.migrations_applied : 'none (up to date)',
    ],
    ['platforms changed', report.platforms_changed.length ? report.platforms_changed : 'none (up to date)'],
  ]);
  out.success('vault ready');
}
