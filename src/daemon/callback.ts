import * as clientStore from '../db/store/clients.js';
import { CredvaultError, InvalidInputError, ReauthRequiredError } from '../errors.js';
import { isPlatformId, PLATFORMS } from '../providers/catalog.js';
import { isLiveClient } from '../services/clients.js';
import { chooseRequested, completeAuthorization } from '../services/connect.js';
import type { ServiceContext } from '../services/context.js';
import { htmlPage } from '../util/html.js';
import { connectionRef } from '../views.js';
import { coversPlatform, roleAllows } from './admin.js';

/**
 * The page a browser lands on when a platform sends it back to the daemon (an app whose redirect URI
 * is the daemon's public callback URL). It finishes the flow started with `connections/start`: the
 * state is checked and used up, the code exchanged, the accounts asked for at the start connected.
 * The page says what happened in plain words, and nothing secret.
 */

export interface CallbackPage {
  status: number;
  html: string;
}

function page(status: number, title: string, lines: string[]): CallbackPage {
  return { status, html: htmlPage(title, lines) };
}

export async function callbackPage(
  ctx: ServiceContext,
  platform: string,
  params: URLSearchParams,
  /** What could not be done once the connections were stored (a grant's bytes left in the files). */
  warn: (warning: string) => void = () => {},
): Promise<CallbackPage> {
  if (!isPlatformId(platform))
    return page(404, 'Unknown platform', [`credvault does not know "${platform}".`]);
  const state = params.get('state');
  if (!state) {
    return page(400, 'Not connected', [
      'This address was opened without the state credvault sent; nothing was stored.',
    ]);
  }
  try {
    const { connections, warnings } = await completeAuthorization(ctx, state, params, {
      name: null,
      choose: chooseRequested,
      platform,
      quietUnknownState: true,
      checkStarter: async (request, statePlatform) => {
        // Only flows started through the API finish here, and only while their starter may still connect.
        const started = request.startedBy;
        if (!started) {
          throw new InvalidInputError(
            'this authorization was not started through the daemon (connections/start); nothing was stored',
            { hint: 'Finish it where it was started, or start again through the daemon.' },
          );
        }
        const client = await clientStore.getById(ctx.db, started.clientId);
        const live = client && isLiveClient(client);
        if (!live || !roleAllows(client, 'operator') || !coversPlatform(client, statePlatform)) {
          throw new ReauthRequiredError(
            `the client that started this authorization (${started.clientName}) may no longer connect ${PLATFORMS[statePlatform].displayName} accounts; nothing was stored`,
            { hint: 'Ask an operator to start again.' },
          );
        }
      },
    });
    for (const warning of warnings) warn(warning);
    return page(200, `${PLATFORMS[platform].displayName} connected`, [
      ...connections.map(
        (c) => `Connected ${connectionRef(c)}${c.accountName ? ` (${c.accountName})` : ''}.`,
      ),
      'You can close this window.',
    ]);
  } catch (error) {
    if (!(error instanceof CredvaultError)) throw error;
    const status = error.code === 'reauth_required' ? 403 : error.code === 'unavailable' ? 503 : 400;
    // A hint naming a credvault command speaks to an operator at a terminal, not to the person in
    // this browser, who was sent here by whoever started the flow through the API.
    const hint = error.hint?.includes('`credvault ')
      ? 'Ask whoever sent you the sign-in link to start the connection again.'
      : error.hint;
    return page(status, 'Not connected', [error.message, ...(hint ? [hint] : [])]);
  }
}
