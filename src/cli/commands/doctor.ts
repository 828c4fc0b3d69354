import { CredvaultError, escapeUnprintable } from '../../errors.js';
import { type CheckStatus, diagnose } from '../../services/doctor.js';
import type { Runtime } from '../run.js';

const MARK: Record<CheckStatus, string> = { ok: '✓', warning: '!', failed: '✗', skipped: '-' };

/**
 * Prints every check (JSON under --json) and, when one failed, exits with the contract's code of the
 * first failure: 8 for the database or its migrations, 6 for the key, 5 for the daemon.
 */
export async function doctor(rt: Runtime): Promise<void> {
  const report = await diagnose(rt.config);
  const { out } = rt;
  if (out.json) {
    out.writeJson({
      ok: report.ok,
      checks: report.checks.map(({ name, status, message, fix }) => ({ name, status, message, fix })),
    });
  } else {
    const { c } = out;
    const paint = (status: CheckStatus, text: string) =>
      status === 'ok'
        ? c.green(text)
        : status === 'warning'
          ? c.yellow(text)
          : status === 'failed'
            ? c.red(text)
            : c.dim(text);
    const width = Math.max(...report.checks.map((check) => check.name.length));
    // A check's text may carry what a variable or a file held (a key path, an error's words): shown
    // escaped, never acted on by the terminal, and whole (a fix is to be pasted).
    for (const check of report.checks) {
      out.raw(
        `${paint(check.status, MARK[check.status])} ${check.name.padEnd(width)}  ${escapeUnprintable(check.message)}`,
      );
      if (check.fix) out.raw(`  ${' '.repeat(width)}  → ${escapeUnprintable(check.fix)}`);
    }
  }
  const failures = report.checks.filter((check) => check.status === 'failed');
  if (failures.length) {
    throw new CredvaultError(
      failures[0]!.code ?? 'internal',
      `${failures.length} check${failures.length === 1 ? '' : 's'} failed: ${failures.map((f) => f.name).join(', ')}`,
    );
  }
}
