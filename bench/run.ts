// `npm run bench`: every benchmark, each figure as a ratio to its baseline measured in the same run.
// Usage: npm run bench [-- NAME...]   (names: startup, token, daemon, rotation, scale)

import { daemon } from './daemon.js';
import { machine } from './lib.js';
import { rotation } from './rotation.js';
import { scale } from './scale.js';
import { startup } from './startup.js';
import { token } from './token.js';

const all: Record<string, () => Promise<{ title: string; rows: Array<Array<unknown>> }>> = {
  startup,
  token,
  daemon,
  rotation,
  scale,
};
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const selected = wanted.length ? wanted : Object.keys(all);
for (const name of selected) {
  if (!all[name]) {
    console.error(`unknown benchmark "${name}"; known: ${Object.keys(all).join(', ')}`);
    process.exit(2);
  }
}

console.log(`credvault benchmarks on ${machine()}, ${new Date().toISOString().slice(0, 10)}\n`);
for (const name of selected) {
  const { title, rows } = await all[name]!();
  console.log(`## ${title}`);
  for (const [label, value, vsBaseline, target] of rows as Array<
    [string, number | string, string, string?]
  >) {
    const figure = typeof value === 'number' ? `${value.toFixed(1)} ms` : value;
    console.log(`  ${label.padEnd(52)} ${figure.padStart(12)}  ${vsBaseline.padStart(7)}  ${target ?? ''}`);
  }
  console.log('');
}
