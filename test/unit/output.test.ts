import { stripVTControlCharacters } from 'node:util';
import stringWidth from 'string-width';
import { describe, expect, it } from 'vitest';
import { Output } from '../../src/cli/output.js';

function output(color: boolean) {
  const written: string[] = [];
  const stream = { write: (text: string) => written.push(text), isTTY: color };
  return { out: new Output({ json: false, color, verbose: false, stdout: stream, stderr: stream }), written };
}

describe('human tables', () => {
  it('keep every column aligned across hundreds of rows, wide characters and colour included', async () => {
    const { out } = output(true);
    await out.prepare();
    // 450 rows: several slices of the layout. A double-width name near the end widens the column for
    // every row above it, the header included.
    const rows = Array.from({ length: 450 }, (_, i) => ({
      name: i === 420 ? '広告アカウント東京' : `account ${i}`,
      status: i % 3 ? 'active' : 'needs_reauth',
      spend: i,
    }));
    const text = out.table(rows, [
      { header: 'NAME', value: (r) => r.name },
      {
        header: 'STATUS',
        value: (r) => r.status,
        style: (r, t, c) => (r.status === 'active' ? c.green(t) : c.red(t)),
      },
      { header: 'SPEND', value: (r) => r.spend },
    ]);
    const lines = text.split('\n').map((line) => stripVTControlCharacters(line));
    expect(lines).toHaveLength(451);
    expect(text).toContain('\u001b[32mactive\u001b[39m');
    // Where each line's second and third columns start, in terminal cells.
    const statusAt = new Set<number>();
    const spendAt = new Set<number>();
    for (const [i, line] of lines.entries()) {
      const status = i === 0 ? 'STATUS' : rows[i - 1]!.status;
      statusAt.add(stringWidth(line.slice(0, line.indexOf(status))));
      spendAt.add(stringWidth(line.slice(0, line.search(/\S+$/))));
    }
    const nameWidth = stringWidth('広告アカウント東京');
    expect([...statusAt]).toEqual([nameWidth + 2]);
    expect([...spendAt]).toEqual([nameWidth + 2 + 'needs_reauth'.length + 2]);
  });
});
