/**
 * One consent, one grant: `connections add` given a refresh token the vault already holds for the same
 * app joins that grant (the new account shares it, as `--account X --account Y` in one run does), so
 * revoking any of them revokes them all; it never presents the held token to the platform again (a
 * rotated-away one would be refused, or end the grant). A held grant that is dead does not take new
 * accounts: the token, once it proves to work, makes a grant that replaces it.
 */
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AllDoubles,
  MICROSOFT_ADS_SCOPE,
  type MicrosoftDouble,
  startAllDoubles,
  startMicrosoftDouble,
} from '../doubles/index.js';
import { addAppFor, addConnection, adoptGrant } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { ONCE, type TestVault, vaultsPerTest } from '../helpers/vault.js';

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vault = vaultsPerTest();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f()));
});

const ADWORDS = 'https://www.googleapis.com/auth/adwords';

interface Row {
  external_account_id: string;
  status: string;
  token_id: string | null;
  status_message: string | null;
}

function connections(v: TestVault): Promise<Row[]> {
  return v.sql<Row>(
    'select external_account_id, status, token_id, status_message from ad_account_connections order by external_account_id',
  );
}

describe('connections add with a refresh token the vault already holds', () => {
  it('joins the held grant: one grant, the token not sent again, and revoking either revokes both', async () => {
    const v = await vault();
    const app = await addAppFor(v, 'google_ads', doubles.google as never);
    const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: ADWORDS });
    await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: ['1234567890'] });
    const refreshes = doubles.google.refreshAttempts;

    const second = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
      accounts: ['2345678901'],
      json: true,
    });
    expect(second.code, second.stderr).toBe(0);
    // The contract's connection list: the account added, active.
    expect(JSON.parse(second.stdout)).toEqual([
      expect.objectContaining({ external_account_id: '2345678901', status: 'active' }),
    ]);
    // Proven to work as any adopted token is, by one refresh: the held grant's, under its lease.
    expect(doubles.google.refreshAttempts).toBe(refreshes + 1);

    const fingerprint = createHash('sha256').update(grant.refreshToken).digest('hex');
    await v.session(async (query) => {
      const grants = await query<{ id: string; refresh_token_sha256: string }>(
        'select id, refresh_token_sha256 from oauth_tokens_vault',
      );
      expect(grants).toHaveLength(1);
      expect(grants[0]!.refresh_token_sha256).toBe(fingerprint);
      const rows = await query<{ token_id: string }>('select token_id from ad_account_connections');
      expect(rows.map((r) => r.token_id)).toEqual([grants[0]!.id, grants[0]!.id]);
      // Audited as its neighbours: the account's creation (via adopt, the grant it joined) and the
      // held access token read to list the accounts, with what it was for.
      const audit = await query<{ action: string; target_type: string; detail: Record<string, unknown> }>(
        "select action, target_type, detail from credential_access_audit where id > (select max(id) from credential_access_audit where action = 'token.store')",
      );
      expect(audit).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            action: 'token.serve',
            detail: expect.objectContaining({ purpose: 'connections add' }),
          }),
          expect.objectContaining({
            action: 'connection.create',
            detail: expect.objectContaining({
              account: '2345678901',
              via: 'adopt',
              grant: grants[0]!.id,
              shared_with: ['1234567890'],
            }),
          }),
        ]),
      );
      expect(audit.map((a) => a.action)).not.toContain('token.store');
      // Neither the token nor its hash is written anywhere but the grant's row.
      expect(JSON.stringify(audit)).not.toContain(fingerprint);
    });

    const revoked = await v.json<{ connections: Array<{ external_account_id: string; status: string }> }>([
      'connections',
      'revoke',
      'google_ads:1234567890',
    ]);
    expect(revoked.connections.map((c) => [c.external_account_id, c.status])).toEqual([
      ['1234567890', 'revoked'],
      ['2345678901', 'revoked'],
    ]);
    expect(await v.sql('select id from oauth_tokens_vault')).toEqual([]);
    await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret], [second.stdout]);
    expect(v.printed.join('\n')).not.toContain(fingerprint);
  });

  it.runIf(ONCE)(
    'joins a Microsoft grant whose token rotated since: the original is never presented again',
    async () => {
      // Re-presenting a rotated-away refresh token revokes the whole grant at this double, as a
      // platform detecting refresh token reuse does.
      const microsoft: MicrosoftDouble = await startMicrosoftDouble({ strictRotation: true });
      cleanups.push(() => microsoft.close());
      const v = await vault();
      const app = await addAppFor(v, 'microsoft_ads', microsoft as never);
      const grant = microsoft.issueGrant({
        clientId: app.clientId,
        scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
      } as never);
      await adoptGrant(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987'] });
      const presented = () =>
        microsoft
          .tokenRequests('refresh_token')
          .filter((r) => r.form?.get('refresh_token') === grant.refreshToken).length;
      expect(presented()).toBe(1);

      // The same original token again, for the other account: a person re-running the setup.
      const second = await addConnection(v, 'microsoft_ads', app.label, grant.refreshToken, {
        accounts: ['988'],
      });
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toContain('the vault already holds this refresh token');
      expect(second.stderr).toContain('microsoft_ads:988 shares the grant of microsoft_ads:987');
      expect(presented()).toBe(1);
      expect(microsoft.findGrant(grant.grantId)?.revoked).toBe(false);
      const rows = await connections(v);
      expect(rows.map((r) => [r.external_account_id, r.status])).toEqual([
        ['987', 'active'],
        ['988', 'active'],
      ]);
      expect(rows[0]!.token_id).toBe(rows[1]!.token_id);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
    },
  );

  it.runIf(ONCE)(
    'a held grant that needs a person is not joined: the token, once it works, makes the grant that replaces it',
    async () => {
      const v = await vault();
      const app = await addAppFor(v, 'google_ads', doubles.google as never);
      const grant = doubles.google.issueGrant({ clientId: app.clientId, scope: ADWORDS });
      await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: ['1234567890'] });
      // As a revocation the platform could not be told of leaves it: tokens kept, no longer served.
      await v.sql(
        "update ad_account_connections set status = 'needs_reauth', status_message = 'revocation requested; Google Ads could not be told yet'",
      );
      const [dead] = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
      const refreshes = doubles.google.refreshAttempts;

      const again = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['2345678901'],
      });
      expect(again.code, again.stderr).toBe(0);
      // Proven to work first, as any adopted token.
      expect(doubles.google.refreshAttempts).toBe(refreshes + 1);
      const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
      expect(grants).toHaveLength(1);
      expect(grants[0]!.id).not.toBe(dead!.id);
      const rows = await connections(v);
      expect(rows).toEqual([
        expect.objectContaining({
          external_account_id: '1234567890',
          status: 'needs_reauth',
          token_id: null,
        }),
        expect.objectContaining({
          external_account_id: '2345678901',
          status: 'active',
          token_id: grants[0]!.id,
        }),
      ]);
      expect(rows[0]!.status_message).toContain('google_ads:2345678901');
      expect(again.stderr).toContain('google_ads:1234567890');

      // Joining a live grant proves it works too: a consent revoked at the platform since is found
      // dead by that refresh (marked so, as any refresh would), and nothing joins it: exit 4.
      doubles.google.revokeGrant(grant.grantId);
      const refused = await addConnection(v, 'google_ads', app.label, grant.refreshToken, {
        accounts: ['1234567890'],
      });
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('the vault already holds this refresh token');
      expect(await connections(v)).toEqual([
        rows[0],
        expect.objectContaining({ external_account_id: '2345678901', status: 'needs_reauth' }),
      ]);
      await expectNoSecretsLeaked(v, [grant.refreshToken, app.clientSecret]);
    },
  );
});
