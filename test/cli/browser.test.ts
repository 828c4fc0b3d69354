import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GoogleDouble, startGoogleDouble } from '../doubles/index.js';
import { addAppFor, connectViaDouble } from '../helpers/flows.js';
import { createVault } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

/** Debian's chromium, driven by playwright-core; never a browser a tool downloads by itself. */
const CHROMIUM = '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
if (!available && process.env.CREDVAULT_REQUIRE_BROWSER) {
  throw new Error(`${CHROMIUM} is missing (apt-get install chromium), and CREDVAULT_REQUIRE_BROWSER is set`);
}

let double: GoogleDouble;
beforeAll(async () => {
  double = await startGoogleDouble({ consent: 'page' });
});
afterAll(() => double?.close());

describe.runIf(available)('a real browser', () => {
  it('clicks through the consent page and lands on the loopback callback; the connection is stored', async () => {
    const v = await createVault();
    try {
      await addAppFor(v, 'google_ads', double as never);
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-background-networking',
          '--disable-component-update',
          '--no-first-run',
        ],
      });
      try {
        const page = await browser.newPage();
        const run = await connectViaDouble(v, 'google_ads', ['--account', '1234567890'], {
          follow: async (url) => {
            await page.goto(url);
            await page.click('#allow');
            await page.waitForURL(/^http:\/\/127\.0\.0\.1:\d+\/?\?/);
            await until(async () => (await page.textContent('h1')) === 'Signed in');
            expect(await page.textContent('h1')).toBe('Signed in');
            return { callbackStatus: 200, callbackUrl: page.url() };
          },
        });
        expect(run.result.code, run.result.stderr).toBe(0);
      } finally {
        await browser.close();
      }
      const listed = await v.json<Array<{ external_account_id: string; status: string }>>([
        'connections',
        'list',
      ]);
      expect(listed).toEqual([
        expect.objectContaining({ external_account_id: '1234567890', status: 'active' }),
      ]);
    } finally {
      await v.destroy();
    }
  });
});
