/**
 * Shared plumbing for the KMS doubles (aws.ts, gcp.ts, vault.ts): a loopback HTTP server that reads the
 * whole body, records the request, drops the socket while the double is `down`, and answers with what
 * the double's handler returns; plus the AES-256-GCM sealing every double uses for its key material.
 *
 * Dependencies: node:http and node:crypto only.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the double's handler sees of a request. */
export interface KmsHttpRequest {
  method: string;
  /** Path without the query string, still percent-encoded. */
  path: string;
  /** The raw query string without '?' ('' when none). */
  rawQuery: string;
  query: URLSearchParams;
  /** Lowercased header names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  /** Raw body text ('' when there was none). */
  body: string;
}

/** What a handler answers. `drop` destroys the socket without a response. */
export interface KmsReply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  drop?: boolean;
}

export interface KmsServer {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

export function jsonReply(status: number, body: unknown, headers: Record<string, string> = {}): KmsReply {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body: JSON.stringify(body),
  };
}

function lowerHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** The reply of a double that is `down`: the socket is destroyed, the client sees a connection reset. */
export const DROP: KmsReply = { status: 0, drop: true };

/** Starts a server on 127.0.0.1, port 0; the handler sees each request once its body is read. */
export async function startKmsServer(
  handler: (req: KmsHttpRequest) => KmsReply | Promise<KmsReply>,
): Promise<KmsServer> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => res.destroy());
    req.on('end', () => {
      const rawUrl = req.url ?? '/';
      const q = rawUrl.indexOf('?');
      const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
      const rawQuery = q === -1 ? '' : rawUrl.slice(q + 1);
      const request: KmsHttpRequest = {
        method: (req.method ?? 'GET').toUpperCase(),
        path,
        rawQuery,
        query: new URLSearchParams(rawQuery),
        headers: lowerHeaders(req),
        body: Buffer.concat(chunks).toString('utf8'),
      };
      Promise.resolve()
        .then(() => handler(request))
        .then(
          (reply) => send(res, reply),
          (err: unknown) =>
            send(
              res,
              jsonReply(500, { error: `double failure: ${err instanceof Error ? err.message : err}` }),
            ),
        );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, reply: KmsReply): void {
  if (reply.drop) {
    res.socket?.destroy();
    return;
  }
  const body = reply.body ?? '';
  res.writeHead(reply.status, { ...reply.headers, 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

export function parseJsonObject(body: string): Record<string, unknown> | null {
  if (body.trim() === '') return {};
  try {
    const value: unknown = JSON.parse(body);
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** Strict standard base64 (with padding), as Go's and Java's decoders require. Null when malformed. */
export function decodeBase64Strict(value: unknown): Buffer | null {
  if (typeof value !== 'string') return null;
  if (value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null;
  return Buffer.from(value, 'base64');
}

/** Standard or URL-safe base64, padding optional (what protobuf JSON parsers accept for bytes). */
export function decodeBase64Lenient(value: unknown): Buffer | null {
  if (typeof value !== 'string') return null;
  const unpadded = value.replace(/=+$/, '');
  if (!/^[A-Za-z0-9+/_-]*$/.test(unpadded) || unpadded.length % 4 === 1) return null;
  return Buffer.from(unpadded.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

// ---------------------------------------------------------------------------------------------------
// AES-256-GCM sealing

export const GCM_NONCE_BYTES = 12;
export const GCM_TAG_BYTES = 16;

export function newKeySecret(): Buffer {
  return randomBytes(32);
}

/** nonce (12) ‖ ciphertext ‖ tag (16), the layout Vault's aes256-gcm96 uses too. */
export function seal(secret: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', secret, nonce);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

/** Null when the tag does not verify (wrong key, wrong associated data, tampered bytes). */
export function open(secret: Buffer, sealed: Buffer, aad: Buffer): Buffer | null {
  if (sealed.length < GCM_NONCE_BYTES + GCM_TAG_BYTES) return null;
  const nonce = sealed.subarray(0, GCM_NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - GCM_TAG_BYTES);
  const body = sealed.subarray(GCM_NONCE_BYTES, sealed.length - GCM_TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', secret, nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    return null;
  }
}
