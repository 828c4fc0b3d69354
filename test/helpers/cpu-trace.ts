/**
 * With CREDVAULT_TEST_TRACE=FILE, one JSON line per test with the CPU it cost (kind `cpu`): this
 * worker's own and that of the processes it started and has reaped (credvault commands, daemons,
 * shells), from /proc/self/stat. The suite's time on a 2-core machine is its CPU; this says which
 * tests spend it. A line of kind `cpu-file` has the whole file's, its hooks included.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';

const TRACE = process.env.CREDVAULT_TEST_TRACE;
const TICKS_PER_SECOND = 100;

/** utime, stime, cutime, cstime in ticks (proc(5): fields 14–17, counted after the command name). */
function cpuTicks(): number[] {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields.slice(11, 15).map(Number);
}

function record(kind: 'cpu' | 'cpu-file', since: number[], file: string, test?: string): void {
  const now = cpuTicks();
  const [own, children] = [0, 2].map(
    (i) => (now[i]! - since[i]! + now[i + 1]! - since[i + 1]!) / TICKS_PER_SECOND,
  );
  const db = process.env.CREDVAULT_TEST_DB ?? 'none';
  appendFileSync(TRACE!, `${JSON.stringify({ file, test, db, kind, own, children })}\n`);
}

if (TRACE && process.platform === 'linux') {
  let fileStart: number[] = [];
  let file = '';
  let testStart: number[] = [];
  beforeAll(() => {
    fileStart = cpuTicks();
    file = (expect.getState().testPath ?? '').split('/').pop() ?? '';
  });
  beforeEach(() => {
    testStart = cpuTicks();
  });
  afterEach(() => record('cpu', testStart, file, expect.getState().currentTestName));
  afterAll(() => record('cpu-file', fileStart, file));
}
