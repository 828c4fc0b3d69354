import * as appStore from '../db/store/apps.js';
import type { ConnectionView } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import { connectionRef } from '../views.js';
import { REVOCATION_REQUESTED } from './connections.js';
import type { ServiceContext } from './context.js';

export type Urgency = 'ok' | 'warning' | 'critical';

/**
 * A connection as status weighs it: with whether its app is enabled (a disabled app renews and uses
 * none of its tokens). Absent where the caller did not look, taken as enabled.
 */
export type AssessedConnection = ConnectionView & { appEnabled?: boolean };

export interface ConnectionHealth {
  connection: AssessedConnection;
  urgency: Urgency;
  /** What is wrong, in a sentence, when something is. */
  problem: string | null;
  /** What a person should do next, when anything. */
  action: string | null;
}

const DAY = 86_400_000;

const ref = connectionRef;

/** What each connection needs, most urgent first. */
export function assess(c: AssessedConnection, now = Date.now()): ConnectionHealth {
  // With the app named: `connect` asks which app when a platform has several.
  const reconnect = `credvault connect ${c.platform} --app ${c.appLabel} --account ${c.externalAccountId}`;
  if (c.status === 'revoked') {
    return {
      connection: c,
      urgency: 'critical',
      problem: 'revoked',
      action: `connect again if it is still needed: ${reconnect}`,
    };
  }
  // Before the grant's own state: while its app is disabled nothing renews the tokens, refreshes and
  // campaign commands are refused (exit 7), and a new consent (the reconnect below) is refused too, so
  // enabling the app comes first whatever else is wrong.
  if (c.appEnabled === false) {
    const app = `${c.platform}/${c.appLabel}`;
    const expired = c.accessTokenExpiresAt !== null && c.accessTokenExpiresAt.getTime() <= now;
    return {
      connection: c,
      // Until the access token ends, `token get` still serves it: attention soon, not yet a person now.
      urgency: expired || c.status !== 'active' ? 'critical' : 'warning',
      problem: expired
        ? `app ${app} is disabled: its access token expired ${c.accessTokenExpiresAt!.toISOString()} and cannot be renewed`
        : `app ${app} is disabled: its tokens cannot be renewed, and campaign commands and refreshes are refused`,
      action: `credvault apps enable ${app}${c.status === 'active' ? '' : `, then ${reconnect}`}`,
    };
  }
  if (c.status === 'needs_reauth') {
    // A revocation the platform could not be told of: what is left to do is that revocation.
    const revoking = c.tokenId !== null && c.statusMessage?.startsWith(REVOCATION_REQUESTED) === true;
    return {
      connection: c,
      urgency: 'critical',
      problem: c.statusMessage ?? 'the platform refused the refresh token',
      action: revoking
        ? `credvault connections revoke ${ref(c)} (again, once the platform answers; --force destroys the tokens here without telling it)`
        : reconnect,
    };
  }
  if (c.status === 'error') {
    return {
      connection: c,
      urgency: 'critical',
      problem: `${c.consecutiveFailures} refreshes failed in a row: ${c.statusMessage ?? 'unknown error'}`,
      // The platform refused the app's own credentials (invalid_client: a secret rotated at the
      // platform): a new consent would fail on the same secret; the app is what to fix.
      action:
        c.lastErrorCode === 'client'
          ? `credvault apps update ${c.platform}/${c.appLabel} --new-client-secret (the platform refused the app's own credentials), then credvault connections refresh ${ref(c)} --force`
          : `credvault connections refresh ${ref(c)} --force, then ${reconnect} if it still fails`,
    };
  }
  // Without --force, a refresh during a cool-down answers from the recorded failure.
  const cooling = c.cooldownUntil !== null && c.cooldownUntil.getTime() > now;
  const refresh = `credvault connections refresh ${ref(c)}${cooling ? ' --force' : ''}`;
  // A refresh was sent and its answer never recorded (the process died, or the answer was lost).
  if (c.refreshInFlightSince && (!c.leaseExpiresAt || c.leaseExpiresAt.getTime() < now)) {
    return {
      connection: c,
      urgency: 'warning',
      problem: `a refresh sent at ${c.refreshInFlightSince.toISOString()} never recorded its answer; the platform may have rotated the refresh token`,
      action: `${refresh} to find out; if the platform refuses it, ${reconnect}`,
    };
  }
  if (c.refreshTokenExpiresAt) {
    const left = c.refreshTokenExpiresAt.getTime() - now;
    // An end from disuse (Google's 6 idle months, Microsoft's 90 days) moves with every refresh: one
    // renews it, no person needed. The platform's own end (LinkedIn's year, a Google app in Testing)
    // and one already passed need a new consent.
    if (left > 0 && left <= 14 * DAY && c.refreshTokenExpiryFixed === false) {
      return {
        connection: c,
        urgency: left <= 3 * DAY ? 'critical' : 'warning',
        problem: `the refresh token expires ${c.refreshTokenExpiresAt.toISOString()} unless it is used before then`,
        action: `${refresh} (a refresh renews it); if the platform refuses it, ${reconnect}`,
      };
    }
    if (left <= 3 * DAY) {
      return {
        connection: c,
        urgency: 'critical',
        problem: `the refresh token ${left <= 0 ? 'expired' : 'expires'} ${c.refreshTokenExpiresAt.toISOString()}`,
        action: reconnect,
      };
    }
    if (left <= 14 * DAY) {
      return {
        connection: c,
        urgency: 'warning',
        problem: `the refresh token expires ${c.refreshTokenExpiresAt.toISOString()}`,
        action: `${reconnect} before then`,
      };
    }
  }
  // An access token without a refresh token (LinkedIn apps outside its partner programme): nothing
  // can renew it, so its end is the connection's.
  if (c.hasRefreshToken === false && c.accessTokenExpiresAt) {
    const left = c.accessTokenExpiresAt.getTime() - now;
    if (left <= 14 * DAY) {
      return {
        connection: c,
        urgency: left <= 3 * DAY ? 'critical' : 'warning',
        problem: `the access token ${left <= 0 ? 'expired' : 'expires'} ${c.accessTokenExpiresAt.toISOString()}, and there is no refresh token to renew it`,
        action: left <= 0 ? reconnect : `${reconnect} before then`,
      };
    }
  }
  if (c.cooldownUntil && c.cooldownUntil.getTime() > now) {
    return {
      connection: c,
      urgency: 'warning',
      problem: `the last refresh failed (${c.lastErrorMessage ?? 'unknown'}); next attempt after ${c.cooldownUntil.toISOString()}`,
      action: `wait, or credvault connections refresh ${ref(c)} --force`,
    };
  }
  return { connection: c, urgency: 'ok', problem: null, action: null };
}

const ORDER: Record<Urgency, number> = { critical: 0, warning: 1, ok: 2 };

export async function vaultStatus(ctx: ServiceContext): Promise<ConnectionHealth[]> {
  const views = await connectionStore.listViews(ctx.db, {});
  const apps = await appStore.list(ctx.db);
  const enabled = new Map(apps.map((app) => [app.id, app.enabled]));
  return views
    .map((v) => assess({ ...v, appEnabled: enabled.get(v.appId) ?? true }))
    .sort((a, b) => ORDER[a.urgency] - ORDER[b.urgency]);
}
