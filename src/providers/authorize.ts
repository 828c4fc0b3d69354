import type { AuthorizationRequest, ProviderApp } from './types.js';

/** The authorization URL: the standard parameters, PKCE when given, then the platform's own. */
export function buildAuthorizationUrl(
  app: ProviderApp,
  request: AuthorizationRequest,
  extra: Record<string, string> = {},
): string {
  const url = new URL(app.endpoints.authorize);
  const params = url.searchParams;
  params.set('client_id', app.clientId);
  params.set('response_type', 'code');
  params.set('redirect_uri', request.redirectUri);
  params.set('scope', app.scopes.join(' '));
  params.set('state', request.state);
  if (request.codeChallenge) {
    params.set('code_challenge', request.codeChallenge);
    params.set('code_challenge_method', 'S256');
  }
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return url.toString();
}

/** Joins a base URL and a path without losing the base's own path prefix. */
export function apiUrl(base: string, path: string, query?: Record<string, string>): string {
  const url = new URL(base.replace(/\/+$/, '') + path);
  for (const [key, value] of Object.entries(query ?? {})) url.searchParams.set(key, value);
  return url.toString();
}
