import { type ConnectionHealth, vaultStatus } from '../../services/status.js';
import { accountLabel, connectionJson, connectionRef } from '../../views.js';
import { withContext } from '../context.js';
import type { Runtime } from '../run.js';
import { relative, tokenTimes } from './connections.js';

export async function status(rt: Runtime): Promise<void> {
  const health = await withContext(rt, (ctx) => vaultStatus(ctx));
  const counts = { ok: 0, warning: 0, critical: 0 };
  for (const h of health) counts[h.urgency] += 1;
  if (rt.out.json) {
    return rt.out.writeJson({
      summary: { connections: health.length, ...counts },
      connections: health.map((h) => ({
        ...connectionJson(h.connection),
        app_enabled: h.connection.appEnabled !== false,
        urgency: h.urgency,
        problem: h.problem,
        action: h.action,
      })),
    });
  }
  const { c } = rt.out;
  const paint = (h: ConnectionHealth, text: string) =>
    h.urgency === 'critical' ? c.red(text) : h.urgency === 'warning' ? c.yellow(text) : c.green(text);
  rt.out.list(
    health,
    (h) => h,
    [
      {
        header: 'CONNECTION',
        value: (h) => connectionRef(h.connection),
      },
      { header: 'ACCOUNT', value: (h) => accountLabel(h.connection) },
      { header: 'STATUS', value: (h) => h.connection.status, style: (h, text) => paint(h, text) },
      // As `token get` would serve them: not a dead grant's times as if usable (tokenTimes).
      { header: 'ACCESS TOKEN', value: (h) => tokenTimes(h.connection).access },
      { header: 'REFRESH TOKEN', value: (h) => tokenTimes(h.connection).refresh },
      { header: 'LAST REFRESH', value: (h) => relative(h.connection.lastRefreshedAt) },
    ],
    'no connections yet: connect one with `credvault connect PLATFORM`',
  );
  const unhealthy = health.filter((h) => h.urgency !== 'ok');
  if (unhealthy.length) {
    rt.out.raw('');
    for (const h of unhealthy) {
      const name = connectionRef(h.connection);
      rt.out.raw(
        `${paint(h, h.urgency === 'critical' ? '✗' : '!')} ${name}: ${h.problem}\n    → ${h.action}`,
      );
    }
  }
}
