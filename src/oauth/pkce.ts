import { createHash, randomBytes } from 'node:crypto';
import * as oauth from 'oauth4webapi';

/** PKCE S256 (RFC 7636), by oauth4webapi. */
export function newCodeVerifier(): string {
  return oauth.generateRandomCodeVerifier();
}

export function codeChallenge(verifier: string): Promise<string> {
  return oauth.calculatePKCECodeChallenge(verifier);
}

/** `state`: 32 random bytes; only its SHA-256 is stored. */
export function newState(): string {
  return randomBytes(32).toString('base64url');
}

export function hashState(state: string): string {
  return createHash('sha256').update(state, 'utf8').digest('hex');
}
