import { z } from 'zod';
import { DURATION, MAX_MIN_TTL_SECONDS } from '../config.js';
import type { ClientRow } from '../db/store/clients.js';
import type { ConnectionRow } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import { type CredvaultError, NotFoundError } from '../errors.js';
import { PLATFORM_IDS, PLATFORMS, type PlatformId, parsePlatform } from '../providers/catalog.js';
import {
  APP_INPUTS,
  APP_LABEL,
  type AppInputNames,
  addApp,
  listApps,
  parseAppFields,
} from '../services/apps.js';
import type { Actor } from '../services/audit.js';
import {
  CLIENT_NAME,
  type ClientInputNames,
  clientJson,
  createClient,
  listClients,
  ROLES,
  type Role,
  revokeClient,
} from '../services/clients.js';
import { startAuthorization } from '../services/connect.js';
import {
  CONNECTION_NAME,
  parseAccountIds,
  parseConnectionName,
  resolveConnection,
} from '../services/connections.js';
import type { ServiceContext } from '../services/context.js';
import { listPlatforms } from '../services/platforms.js';
import { revokeConnection } from '../services/revoke.js';
import { refreshConnection } from '../services/tokens.js';
import { VERSION } from '../version.js';
import { appJson, connectionJson, platformJson } from '../views.js';

/**
 * The admin API: the seed's /integrations routes (under /v1 and at the seed's own paths), behind client
 * tokens with roles. One table of routes drives the handlers, the body validation and the OpenAPI
 * document, so what is documented is what is checked; responses are parsed through their schemas
 * too, which drops any field a schema does not name (a new column never leaks by default).
 */

const ROLE_RANK: Record<Role, number> = { reader: 0, operator: 1, admin: 2 };

export function roleAllows(client: Pick<ClientRow, 'role'>, needed: Role): boolean {
  return (ROLE_RANK[client.role as Role] ?? -1) >= ROLE_RANK[needed];
}

/** Whether a client's scope covers a whole platform (to connect new accounts or manage its apps). */
export function coversPlatform(client: Pick<ClientRow, 'scope'>, platform: string): boolean {
  return client.scope.all === true || (client.scope.platforms?.includes(platform) ?? false);
}

export function inScope(
  client: Pick<ClientRow, 'scope'>,
  connection: { id: string; platform: string },
): boolean {
  return (
    coversPlatform(client, connection.platform) ||
    (client.scope.connections?.includes(connection.id) ?? false)
  );
}

// ---- Schemas -------------------------------------------------------------------------------------

/** The named schemas: components of the OpenAPI document. */
const SCHEMAS = z.registry<{ id: string }>();

const Platform = z.enum(PLATFORM_IDS).describe('A platform id');
/**
 * A platform named in a request body: read as the paths and the CLI read it (`google_ads`, or the kebab
 * form `google-ads`), and handed on as its id.
 */
const PlatformIn = z
  .string()
  .transform((value, check) => {
    try {
      return parsePlatform(value);
    } catch (error) {
      const { message, hint } = error as CredvaultError;
      check.issues.push({ code: 'custom', input: value, message: hint ? `${message}. ${hint}` : message });
      return z.NEVER;
    }
  })
  .describe('A platform id (google_ads), or its kebab form (google-ads)');
const Timestamp = z.string().describe('ISO 8601, UTC').nullable();
const Text = (max: number) => z.string().trim().min(1).max(max);
const Url = z.url({ protocol: /^https?$/ }).max(2048);

const Capabilities = z
  .object({
    keywords: z.boolean(),
    validate_only: z.enum(['true', 'simulated']),
    budget_unit: z.enum(['micros', 'currency', 'decimal_string']),
    developer_token: z.enum(['required', 'optional', 'none']),
    pkce: z.boolean(),
    refresh_token_rotation: z.boolean(),
    refresh_token_lifetime: z.string(),
    refresh_token_idle_days: z.number().nullable(),
    refresh_token_fixed_expiry: z.boolean(),
    access_token_lifetime: z.string(),
    revocation_endpoint: z.boolean(),
    any_loopback_port: z.boolean(),
    client_auth: z.enum(['client_secret_post', 'client_secret_basic']),
  })
  .register(SCHEMAS, { id: 'Capabilities' });

const PlatformOut = z
  .object({ id: Platform, name: z.string(), capabilities: Capabilities })
  .register(SCHEMAS, { id: 'Platform' });

const AppIn = z
  .strictObject({
    label: z.string().regex(APP_LABEL, 'letters, digits, ".", "_" and "-" (at most 63)'),
    client_id: Text(512),
    client_secret: Text(4096).optional().describe('Write-only: stored encrypted, never returned'),
    redirect_uri: Url.optional(),
    scopes: z.array(Text(512)).min(1).max(32).optional(),
    developer_token: Text(4096).optional().describe('Write-only: stored encrypted, never returned'),
    // Its form (10 digits, dashes allowed) is checked by parseAppFields, as for the CLI.
    login_customer_id: Text(32).optional(),
    user_agent: Text(256).optional(),
    api_version: Text(32).optional(),
    authorize_url: Url.optional(),
    token_url: Url.optional(),
    revoke_url: Url.optional(),
    api_base_url: Url.optional(),
    // An app file written for the CLI may say its platform: it must be the path's.
    platform: PlatformIn.optional().describe("The platform the fields were written for: must be the path's"),
  })
  .register(SCHEMAS, { id: 'AppInput' });

const AppOut = z
  .object({
    id: z.string(),
    platform: Platform,
    label: z.string(),
    client_id: z.string(),
    redirect_uri: z.string(),
    scopes: z.array(z.string()),
    login_customer_id: z.string().nullable(),
    user_agent: z.string().nullable(),
    api_version: z.string().nullable(),
    authorize_url: z.string().nullable(),
    token_url: z.string().nullable(),
    revoke_url: z.string().nullable(),
    api_base_url: z.string().nullable(),
    enabled: z.boolean(),
    has_client_secret: z.boolean(),
    has_developer_token: z.boolean(),
    created_by: z.string(),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .register(SCHEMAS, { id: 'App' });

const ConnectionOut = z
  .object({
    id: z.string(),
    platform: Platform,
    app_id: z.string(),
    app_label: z.string(),
    external_account_id: z.string(),
    account_name: z.string().nullable(),
    name: z.string().nullable(),
    status: z.string(),
    status_message: z.string().nullable(),
    consecutive_failures: z.number(),
    access_token_expires_at: Timestamp,
    refresh_token_expires_at: Timestamp,
    last_refreshed_at: Timestamp,
    connected_by: z.string(),
    created_at: Timestamp,
  })
  .register(SCHEMAS, { id: 'Connection' });

const StartIn = z
  .strictObject({
    app: Text(128).optional().describe("The app's label or id (default: the platform's only enabled app)"),
    accounts: z
      .union([z.array(Text(64)).min(1).max(100), z.literal('all')])
      .optional()
      .describe('Ad account ids to connect when the callback comes back, or "all"'),
    name: z
      .string()
      .regex(CONNECTION_NAME, 'a letter, then letters, digits, ".", "_" and "-"')
      .optional()
      .describe('A name for the connection (one account only)'),
  })
  // Refused now, not after the person has consented at the platform.
  .refine((body) => !(body.name && (body.accounts === 'all' || (body.accounts?.length ?? 0) > 1)), {
    message: 'a name is for one connection; leave it out when connecting several accounts',
    path: ['name'],
  })
  .register(SCHEMAS, { id: 'ConnectionStart' });

const StartOut = z
  .object({
    authorize_url: z.string(),
    state: z.string(),
    redirect_uri: z.string(),
    expires_at: z.string(),
    platform: Platform,
    app_id: z.string(),
    app_label: z.string(),
  })
  .register(SCHEMAS, { id: 'AuthorizationStart' });

const RefreshIn = z
  .strictObject({
    force: z
      .boolean()
      .optional()
      .describe('Also try a connection that is in error or cooling down (the CLI’s --force)'),
  })
  .register(SCHEMAS, { id: 'RefreshOptions' });

const RefreshOut = z
  .object({ connection: ConnectionOut, refreshed: z.boolean(), expires_at: Timestamp })
  .register(SCHEMAS, { id: 'RefreshResult' });

const RevokeOut = z
  .object({
    connections: z.array(ConnectionOut),
    platform: z.enum(['revoked', 'no_endpoint', 'failed', 'already']),
    message: z.string().nullable(),
    consent_page: z.string().nullable(),
    warnings: z
      .array(z.string())
      .describe('what could not be done once the revocation committed (copies left in the database files)'),
  })
  .register(SCHEMAS, { id: 'RevokeResult' });

const Scope = z
  .object({
    all: z.boolean().optional(),
    platforms: z.array(z.string()).optional(),
    connections: z.array(z.string()).optional(),
  })
  .register(SCHEMAS, { id: 'ClientScope' });

const ClientOut = z
  .object({
    id: z.string(),
    name: z.string(),
    role: z.enum(ROLES),
    scope: Scope,
    created_by: z.string(),
    created_at: z.string(),
    expires_at: Timestamp,
    revoked_at: Timestamp,
    last_used_at: Timestamp,
  })
  .register(SCHEMAS, { id: 'Client' });

const ClientIn = z
  .strictObject({
    name: z.string().regex(CLIENT_NAME, 'letters, digits, ".", "_" and "-"'),
    role: z.enum(ROLES).default('reader'),
    connections: z.array(Text(128)).max(1000).optional(),
    platforms: z.array(PlatformIn).max(4).optional(),
    all: z.boolean().optional(),
    expires_in: z.string().regex(DURATION, 'a duration such as 90s, 30m, 12h or 7d').optional(),
  })
  .register(SCHEMAS, { id: 'ClientInput' });

const CreatedClientOut = z
  .object({
    name: z.string(),
    token: z.string().describe('Shown once; only its hash is kept'),
    role: z.enum(ROLES),
    scope: Scope,
    expires_at: Timestamp,
  })
  .register(SCHEMAS, { id: 'CreatedClient' });

const ErrorOut = z
  .object({ error: z.object({ code: z.string(), message: z.string() }) })
  .register(SCHEMAS, { id: 'Error' });

// ---- Routes --------------------------------------------------------------------------------------

/** An answer other than 2xx: its status, the contract's error code, and any headers it needs. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A request to a route before its body is read. */
export interface RouteRequest {
  ctx: ServiceContext;
  client: ClientRow;
  actor: Actor;
  params: Record<string, string>;
}

export interface RouteInput extends RouteRequest {
  body: unknown;
  /** What the route's `authorize` found (the connection it acts on, say). */
  target: unknown;
}

export interface Route {
  id: string;
  method: 'GET' | 'POST';
  /** With `{name}` segments; served at `/v1…` and at the seed's path. */
  path: string;
  role: Role;
  summary: string;
  body?: z.ZodType;
  status: number;
  response: z.ZodType;
  /** The body may be left out entirely (it then counts as `{}`). */
  optionalBody?: boolean;
  /**
   * What its handler answers beyond what every route of its kind does (for the OpenAPI document): 404
   * for an unknown thing the body names, 409 for a conflict or a connection that needs a person.
   */
  answers?: Array<404 | 409>;
  /**
   * The scope checks that need no body, made before the body is read: a refusal is a refusal (403,
   * audited as denied) whatever was sent. What it returns is the handler's `target`.
   */
  authorize?(request: RouteRequest): unknown;
  handle(input: RouteInput): Promise<unknown>;
}

function forbid(message: string): never {
  throw new ApiError(403, 'forbidden', message);
}

/** The path's platform (`google_ads` or `google-ads`); an unknown one is a path that does not exist. */
function platformParam(params: Record<string, string>): PlatformId {
  const value = params.platform ?? '';
  try {
    return parsePlatform(value);
  } catch {
    throw new ApiError(
      404,
      'not_found',
      `unknown platform "${value}" (platforms: ${PLATFORM_IDS.join(', ')})`,
    );
  }
}

function needPlatform(client: ClientRow, platform: PlatformId, what: string): void {
  if (!coversPlatform(client, platform)) {
    forbid(`client ${client.name} is not scoped to all of ${platform}, which ${what} needs`);
  }
}

/** The connections a client may read (of one platform, or all), as JSON. */
export async function visibleConnections(ctx: ServiceContext, client: ClientRow, platform?: PlatformId) {
  const views = await connectionStore.listViews(ctx.db, platform ? { platform } : {});
  return views.filter((v) => inScope(client, v)).map(connectionJson);
}

/** Clients reach every connection: only a client scoped to everything manages them. */
function needAll(client: ClientRow): void {
  if (!client.scope.all) forbid(`client ${client.name} is not scoped to everything, which clients need`);
}

/** A connection of the path's platform that the client may act on; others are "not found" or refused. */
async function scopedConnection(input: RouteRequest, platform: PlatformId): Promise<ConnectionRow> {
  const connection = await resolveConnection(input.ctx.db, input.params.id ?? '').catch((error: unknown) => {
    // Nor whether one of that name or account exists, unless it may see them all.
    if (error instanceof NotFoundError && !input.client.scope.all)
      forbid(`client ${input.client.name} may not act on connection ${input.params.id}`);
    throw error;
  });
  // Scope first: a client learns nothing of a connection outside it, not even its platform.
  if (!inScope(input.client, connection)) {
    forbid(`client ${input.client.name} may not act on connection ${input.params.id}`);
  }
  if (connection.platform !== platform) {
    throw new NotFoundError(`connection ${input.params.id} is not a ${platform} connection`);
  }
  return connection;
}

/** What the services' errors ask for, named as the request body has it (not the CLI's flags). */
const BODY_APP_NAMES = Object.fromEntries(
  APP_INPUTS.map((field) => [field, `"${field}" in the JSON body`]),
) as AppInputNames;
const BODY_CLIENT_NAMES: ClientInputNames = {
  connections: '"connections" (a list)',
  platforms: '"platforms" (a list)',
  all: '"all": true',
  expiresIn: 'expires_in',
};

export const ROUTES: Route[] = [
  {
    id: 'platforms.list',
    method: 'GET',
    path: '/integrations/platforms',
    role: 'reader',
    summary: 'The platforms and their capabilities',
    status: 200,
    response: z.array(PlatformOut),
    handle: async ({ ctx }) => (await listPlatforms(ctx)).map(platformJson),
  },
  {
    id: 'platforms.capabilities',
    method: 'GET',
    path: '/integrations/{platform}/capabilities',
    role: 'reader',
    summary: "A platform's capabilities: keywords, validate-only (true or simulated), budget unit…",
    status: 200,
    response: Capabilities,
    handle: async ({ params }) => PLATFORMS[platformParam(params)].capabilities,
  },
  {
    id: 'apps.list',
    method: 'GET',
    path: '/integrations/{platform}/apps',
    role: 'admin',
    summary: "A platform's OAuth apps (never their secrets)",
    status: 200,
    response: z.array(AppOut),
    authorize: ({ client, params }) => needPlatform(client, platformParam(params), 'reading its apps'),
    handle: async ({ ctx, params }) => (await listApps(ctx, platformParam(params))).map(appJson),
  },
  {
    id: 'apps.create',
    method: 'POST',
    path: '/integrations/{platform}/apps',
    role: 'admin',
    summary: 'Register an OAuth app; its secrets are stored encrypted and never returned',
    body: AppIn,
    status: 201,
    response: AppOut,
    answers: [409],
    authorize: ({ client, params }) => needPlatform(client, platformParam(params), 'adding an app'),
    handle: async ({ ctx, params, body }) => {
      const fields = parseAppFields(body as z.infer<typeof AppIn>);
      return appJson(await addApp(ctx, platformParam(params), fields, BODY_APP_NAMES));
    },
  },
  {
    id: 'connections.start',
    method: 'POST',
    path: '/integrations/{platform}/connections/start',
    role: 'operator',
    summary: 'Start connecting ad accounts: the URL to send a person to, and the state it carries',
    body: StartIn,
    optionalBody: true,
    status: 201,
    response: StartOut,
    answers: [409],
    authorize: ({ client, params }) => needPlatform(client, platformParam(params), 'connecting new accounts'),
    handle: async ({ ctx, client, params, body }) => {
      const platform = platformParam(params);
      const request = (body ?? {}) as z.infer<typeof StartIn>;
      const accounts = Array.isArray(request.accounts)
        ? parseAccountIds(platform, request.accounts)
        : request.accounts;
      return startAuthorization(ctx, platform, request.app ?? null, null, {
        ...(accounts ? { accounts } : {}),
        // The CLI's rule (a name must not look like an id either), not only the schema's pattern.
        name: request.name ? parseConnectionName(request.name) : null,
        startedBy: { clientId: client.id, clientName: client.name },
      });
    },
  },
  {
    id: 'connections.list',
    method: 'GET',
    path: '/integrations/{platform}/connections',
    role: 'reader',
    summary: "The platform's connections this client may read",
    status: 200,
    response: z.array(ConnectionOut),
    handle: async ({ ctx, client, params }) => visibleConnections(ctx, client, platformParam(params)),
  },
  {
    id: 'connections.refresh',
    method: 'POST',
    path: '/integrations/{platform}/connections/{id}/refresh',
    role: 'operator',
    summary: 'Refresh a connection now (the token itself is not returned: use the token route)',
    body: RefreshIn,
    optionalBody: true,
    status: 200,
    response: RefreshOut,
    answers: [409],
    authorize: (request) => scopedConnection(request, platformParam(request.params)),
    handle: async (input) => {
      const connection = input.target as ConnectionRow;
      const { force } = (input.body ?? {}) as z.infer<typeof RefreshIn>;
      const served = await refreshConnection(input.ctx, connection.id, force === true);
      const [view] = await connectionStore.listViews(input.ctx.db, { ids: [connection.id] });
      return {
        connection: connectionJson(view!),
        refreshed: served.refreshed,
        expires_at: served.expiresAt?.toISOString() ?? null,
      };
    },
  },
  {
    id: 'connections.revoke',
    method: 'POST',
    path: '/integrations/{platform}/connections/{id}/revoke',
    role: 'operator',
    summary: "Revoke a connection's grant at the platform (where it can be) and destroy its secrets",
    status: 200,
    response: RevokeOut,
    authorize: async (request) => {
      const connection = await scopedConnection(request, platformParam(request.params));
      // Revoking the consent revokes every connection that shares it: all of them must be in scope.
      if (connection.tokenId) {
        const sharing = await connectionStore.listByGrant(request.ctx.db, connection.tokenId);
        const outside = sharing.filter((c) => !inScope(request.client, c));
        if (outside.length) {
          forbid(
            `revoking ${request.params.id} revokes the consent it shares with ${outside.length} connection${outside.length > 1 ? 's' : ''} outside client ${request.client.name}'s scope`,
          );
        }
      }
      return connection;
    },
    handle: async (input) => {
      const connection = input.target as ConnectionRow;
      const report = await revokeConnection(input.ctx, connection.id);
      return { ...report, connections: report.connections.map(connectionJson) };
    },
  },
  {
    id: 'clients.list',
    method: 'GET',
    path: '/clients',
    role: 'admin',
    summary: 'The clients of this API (never their tokens)',
    status: 200,
    response: z.array(ClientOut),
    authorize: ({ client }) => needAll(client),
    handle: async ({ ctx }) => (await listClients(ctx)).map(clientJson),
  },
  {
    id: 'clients.create',
    method: 'POST',
    path: '/clients',
    role: 'admin',
    summary: 'Make a client token (shown once; only its hash is kept)',
    body: ClientIn,
    status: 201,
    response: CreatedClientOut,
    answers: [404, 409],
    authorize: ({ client }) => needAll(client),
    handle: async ({ ctx, body }) => {
      const input = body as z.infer<typeof ClientIn>;
      const created = await createClient(ctx, {
        name: input.name,
        role: input.role,
        connections: input.connections ?? [],
        platforms: input.platforms ?? [],
        all: input.all === true,
        expiresIn: input.expires_in ?? null,
        names: BODY_CLIENT_NAMES,
      });
      return {
        name: created.client.name,
        token: created.token.reveal(),
        role: created.client.role,
        scope: created.client.scope,
        expires_at: created.client.expiresAt?.toISOString() ?? null,
      };
    },
  },
  {
    id: 'clients.revoke',
    method: 'POST',
    path: '/clients/{name}/revoke',
    role: 'admin',
    summary: 'Revoke a client: its token stops working at once',
    status: 200,
    response: ClientOut,
    authorize: ({ client }) => needAll(client),
    handle: async ({ ctx, params }) => clientJson(await revokeClient(ctx, params.name ?? '')),
  },
];

/** The callback route's path (a browser's, not a client's; served only with --public-callback-url). */
export const CALLBACK_PATH = '/integrations/{platform}/callback';

const compiled = ROUTES.map((route) => ({
  route,
  pattern: new RegExp(`^(?:/v1)?${route.path.replace(/\{(\w+)\}/g, '(?<$1>[^/]+)')}$`),
}));
const callbackPattern = new RegExp(`^(?:/v1)?${CALLBACK_PATH.replace(/\{(\w+)\}/g, '(?<$1>[^/]+)')}$`);

export function matchCallback(pathname: string): { platform: string } | null {
  const match = callbackPattern.exec(pathname);
  return match ? { platform: decodeParam(match.groups!.platform!) } : null;
}

function decodeParam(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new ApiError(400, 'invalid_input', 'a path segment is not valid URL encoding');
  }
}

/**
 * The route for a path: `{route, params}`, `{allow}` (the methods it has) when the path exists with
 * other methods only, or null.
 */
export function matchRoute(
  method: string,
  pathname: string,
): { route: Route; params: Record<string, string> } | { allow: string[] } | null {
  const allow: string[] = [];
  for (const { route, pattern } of compiled) {
    const match = pattern.exec(pathname);
    if (!match) continue;
    if (route.method !== method) {
      allow.push(route.method);
      continue;
    }
    const params: Record<string, string> = {};
    for (const [key, value] of Object.entries(match.groups ?? {})) params[key] = decodeParam(value);
    return { route, params };
  }
  return allow.length ? { allow } : null;
}

/** A body error naming the field: `client_id: expected string, received number`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path.length ? issue.path.join('.') : 'body';
      if (issue.code === 'unrecognized_keys')
        return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
      return `${path}: ${issue.message}`;
    })
    .join('; ');
}

/**
 * What a matched route checks before its body is read: the client's role, the path's platform (404
 * whatever is sent) and the route's own scope checks. Returns the route's target.
 */
export async function authorizeRoute(route: Route, request: RouteRequest): Promise<unknown> {
  if (!roleAllows(request.client, route.role)) {
    forbid(`client ${request.client.name} has role ${request.client.role}; ${route.id} needs ${route.role}`);
  }
  if (request.params.platform !== undefined) platformParam(request.params);
  return route.authorize?.(request);
}

/** Runs an authorized route: its body through the schema, the handler, the response through its schema. */
export async function runRoute(
  route: Route,
  input: Omit<RouteInput, 'body'> & { rawBody: unknown },
): Promise<{ status: number; body: unknown }> {
  let body: unknown;
  if (route.body) {
    if (input.rawBody === undefined && !route.optionalBody) {
      throw new ApiError(400, 'invalid_input', `${route.id} needs a JSON body`);
    }
    const parsed = route.body.safeParse(input.rawBody ?? {});
    if (!parsed.success) throw new ApiError(400, 'invalid_input', describeIssues(parsed.error));
    body = parsed.data;
  } else if (input.rawBody !== undefined && !isEmptyObject(input.rawBody)) {
    throw new ApiError(400, 'invalid_input', `${route.id} takes no request body`);
  }
  const result = await route.handle({ ...input, body });
  return { status: route.status, body: route.response.parse(result) };
}

function isEmptyObject(value: unknown): boolean {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0
  );
}

// ---- OpenAPI -------------------------------------------------------------------------------------

const TokenOut = z
  .object({
    access_token: z.string(),
    token_type: z.string(),
    expires_at: Timestamp,
    connection_id: z.string(),
    platform: Platform,
    external_account_id: z.string(),
  })
  .register(SCHEMAS, { id: 'AccessToken' });

const HealthOut = z
  .object({
    status: z.enum(['ok', 'unavailable']),
    reasons: z.array(z.string()),
    last_sweep_at: Timestamp,
    shutting_down: z.boolean(),
    listening: z
      .boolean()
      .describe(
        'Whether the daemon serves tokens and clients from memory: true while it knows every change reaches it (PostgreSQL LISTEN in place, its heartbeat answered; always on the embedded database); false while it reads them from the database at every request, which does not make it unhealthy',
      ),
  })
  .register(SCHEMAS, { id: 'Health' });

/** Every named schema as JSON Schema (OpenAPI 3.0 flavour), referencing each other as components. */
function componentSchemas(io: 'input' | 'output'): Record<string, Record<string, unknown>> {
  const { schemas } = z.toJSONSchema(SCHEMAS, {
    target: 'openapi-3.0',
    io,
    unrepresentable: 'any',
    uri: (id) => `#/components/schemas/${id}`,
  }) as { schemas: Record<string, Record<string, unknown>> };
  for (const schema of Object.values(schemas)) {
    delete schema.$schema;
    delete schema.$id;
  }
  return schemas;
}

function ref(schema: z.ZodType): Record<string, unknown> {
  if (schema instanceof z.ZodArray) return { type: 'array', items: ref(schema.element as z.ZodType) };
  const id = SCHEMAS.get(schema)?.id;
  if (!id) throw new Error('an API schema has no component name');
  return { $ref: `#/components/schemas/${id}` };
}

const ERROR_STATUSES: Record<string, string> = {
  '400':
    'Invalid input: the message names the field, the path segment or the query parameter (a query parameter the operation does not list is refused)',
  '401': 'No client token, or an unknown, revoked or expired one',
  '403':
    'The role or scope of the client does not allow it; or the request has an Origin header, a Host that is not served, or (without --allow-remote) proxy headers',
  '404': 'Unknown platform, connection, app, client or route',
  '409': 'Conflict (the name is taken), or the connection needs a person to re-authorize',
  '413': 'The body is larger than 64 KiB',
  '415': 'A body that is not application/json',
  '503': 'The platform or the database is unavailable, or the daemon is shutting down; see Retry-After',
};

const ERROR_HEADERS: Record<string, Record<string, unknown>> = {
  '401': { 'WWW-Authenticate': { schema: { type: 'string' }, description: 'Bearer' } },
  '503': {
    'Retry-After': { schema: { type: 'integer' }, description: 'Seconds to wait before trying again' },
  },
};

function errorResponses(codes: string[]): Record<string, unknown> {
  return Object.fromEntries(
    [...new Set(codes)].sort().map((code) => [
      code,
      {
        description: ERROR_STATUSES[code],
        ...(ERROR_HEADERS[code] ? { headers: ERROR_HEADERS[code] } : {}),
        content: { 'application/json': { schema: ref(ErrorOut) } },
      },
    ]),
  );
}

/** What every route behind a client token may answer: no token, refused, unavailable or draining. */
const CLIENT_ERRORS = ['401', '403', '503'];

/** What a route answers besides its success: from its method, its path and what its handler adds. */
function routeErrors(route: Route): string[] {
  return [
    ...CLIENT_ERRORS,
    // A query parameter (the routes take none).
    '400',
    // Every POST body is read (even where the route takes none: then anything but {} is refused).
    ...(route.method === 'POST' ? ['413', '415'] : []),
    // A path segment that names nothing.
    ...(route.path.includes('{') ? ['404'] : []),
    ...(route.answers ?? []).map(String),
  ];
}

function parameters(path: string): unknown[] {
  return [...path.matchAll(/\{(\w+)\}/g)].map(([, name]) => ({
    name,
    in: 'path',
    required: true,
    schema: name === 'platform' ? { type: 'string', enum: [...PLATFORM_IDS] } : { type: 'string' },
    description:
      name === 'id'
        ? 'A connection: its id, `platform:account`, or its name'
        : name === 'name'
          ? "The client's name"
          : 'A platform id',
  }));
}

/** The OpenAPI 3.0 document of the daemon's API, from the schemas the handlers use. */
export function openApiDocument(): Record<string, unknown> {
  const outputs = componentSchemas('output');
  const inputs = componentSchemas('input');
  const inputIds = new Set(ROUTES.flatMap((r) => (r.body ? [SCHEMAS.get(r.body)!.id] : [])));
  // Request bodies are described as clients send them (defaults optional), the rest as answered.
  const components = Object.fromEntries(
    Object.keys(outputs).map((id) => [id, inputIds.has(id) ? inputs[id]! : outputs[id]!]),
  );
  const paths: Record<string, Record<string, unknown>> = {};
  const add = (path: string, method: string, operation: Record<string, unknown>) => {
    paths[path] ??= {};
    paths[path][method] = operation;
  };
  for (const route of ROUTES) {
    const schema = ref(route.response);
    for (const [prefix, suffix] of [
      ['/v1', ''],
      ['', '.seed'],
    ] as const) {
      add(`${prefix}${route.path}`, route.method.toLowerCase(), {
        operationId: `${route.id}${suffix}`,
        summary: route.summary,
        ...(suffix ? { description: 'The same route at the seed API’s path.' } : {}),
        tags: [route.id.split('.')[0]],
        'x-credvault-role': route.role,
        parameters: parameters(route.path),
        ...(route.body
          ? {
              requestBody: {
                required: !route.optionalBody,
                content: { 'application/json': { schema: ref(route.body) } },
              },
            }
          : {}),
        responses: {
          [String(route.status)]: {
            description: route.summary,
            content: { 'application/json': { schema } },
          },
          ...errorResponses(routeErrors(route)),
        },
      });
    }
  }
  add('/v1/connections/{id}/token', 'get', {
    operationId: 'token.get',
    summary: 'A valid access token for a connection (refreshed first when it expires within min_ttl)',
    tags: ['token'],
    'x-credvault-role': 'reader',
    parameters: [
      ...parameters('/{id}'),
      {
        name: 'min_ttl',
        in: 'query',
        required: false,
        schema: { type: 'integer', minimum: 0, maximum: MAX_MIN_TTL_SECONDS },
      },
    ],
    responses: {
      '200': { description: 'The token', content: { 'application/json': { schema: ref(TokenOut) } } },
      ...errorResponses([...CLIENT_ERRORS, '400', '404', '409']),
    },
  });
  add('/v1/connections', 'get', {
    operationId: 'connections.all',
    summary: 'Every connection this client may read',
    description:
      'No filters: a query parameter is refused (400). /v1/integrations/{platform}/connections answers one platform’s.',
    tags: ['connections'],
    'x-credvault-role': 'reader',
    responses: {
      '200': {
        description: 'Connections',
        content: { 'application/json': { schema: ref(z.array(ConnectionOut)) } },
      },
      ...errorResponses([...CLIENT_ERRORS, '400']),
    },
  });
  for (const prefix of ['/v1', '']) {
    add(`${prefix}${CALLBACK_PATH}`, 'get', {
      operationId: `oauth.callback${prefix ? '' : '.seed'}`,
      summary:
        'Where the platform sends the browser back (only with --public-callback-url): finishes the connection and answers a small HTML page',
      tags: ['connections'],
      security: [],
      parameters: [
        ...parameters(CALLBACK_PATH),
        { name: 'state', in: 'query', required: true, schema: { type: 'string' } },
        { name: 'code', in: 'query', required: false, schema: { type: 'string' } },
        { name: 'error', in: 'query', required: false, schema: { type: 'string' } },
      ],
      responses: {
        '200': { description: 'Connected', content: { 'text/html': { schema: { type: 'string' } } } },
        '400': {
          description: 'Wrong, used or expired state',
          content: { 'text/html': { schema: { type: 'string' } } },
        },
        '403': {
          description:
            'Access was denied at the platform, or whoever started the flow may no longer connect this platform (an HTML page); or a request with an Origin header or a Host that is not served (JSON)',
          content: {
            'text/html': { schema: { type: 'string' } },
            'application/json': { schema: ref(ErrorOut) },
          },
        },
        '404': {
          description: 'The daemon was started without --public-callback-url',
          content: { 'application/json': { schema: ref(ErrorOut) } },
        },
      },
    });
  }
  add('/healthz', 'get', {
    operationId: 'health',
    summary: 'Database reachable, last sweep time; 503 while shutting down',
    tags: ['operations'],
    security: [],
    responses: {
      '200': { description: 'Healthy', content: { 'application/json': { schema: ref(HealthOut) } } },
      '503': { description: 'Unhealthy', content: { 'application/json': { schema: ref(HealthOut) } } },
      ...errorResponses(['403']),
    },
  });
  add('/metrics', 'get', {
    operationId: 'metrics',
    summary: 'Prometheus metrics',
    tags: ['operations'],
    responses: {
      '200': {
        description: 'Prometheus text format',
        content: { 'text/plain': { schema: { type: 'string' } } },
      },
      ...errorResponses(CLIENT_ERRORS),
    },
  });
  add('/openapi.json', 'get', {
    operationId: 'openapi',
    summary: 'This document (any client, whatever its role)',
    tags: ['operations'],
    responses: {
      '200': { description: 'OpenAPI 3.0', content: { 'application/json': { schema: { type: 'object' } } } },
      ...errorResponses(CLIENT_ERRORS),
    },
  });
  return {
    openapi: '3.0.3',
    info: {
      title: 'credvault daemon',
      version: VERSION,
      description:
        'Valid access tokens for ad platform connections, and the admin API to manage apps, connections and clients. Every call but /healthz and the OAuth callback (which a browser calls, when the daemon runs with --public-callback-url) needs `Authorization: Bearer <client token>` (`credvault clients create`). Roles: reader (tokens and connections in scope), operator (plus connect, refresh, revoke in scope), admin (plus apps and clients). Besides what each operation lists, any request may be answered 405 with Allow (a method the path does not have: components/responses/MethodNotAllowed), 417 (an Expect other than 100-continue; a client that sends 100-continue is asked for its body only once the request passed the token, role and scope checks), 431 (headers over 16 KiB), 408 (a request too slow to arrive) or 400 (not HTTP), all with the Error body. Every answer carries Cache-Control: no-store.',
    },
    servers: [{ url: 'http://127.0.0.1:8787' }],
    security: [{ clientToken: [] }],
    paths,
    components: {
      schemas: components,
      responses: {
        MethodNotAllowed: {
          description: 'The path exists, not with this method',
          headers: {
            Allow: {
              schema: { type: 'string' },
              description: 'The methods the path has, such as "GET, POST"',
            },
          },
          content: { 'application/json': { schema: ref(ErrorOut) } },
        },
      },
      securitySchemes: {
        clientToken: { type: 'http', scheme: 'bearer', description: 'A credvault client token' },
      },
    },
  };
}
