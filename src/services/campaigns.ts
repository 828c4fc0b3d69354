import type { Secret } from '../crypto/secret.js';
import * as appStore from '../db/store/apps.js';
import type { ConnectionRow } from '../db/store/connections.js';
import { CredvaultError, InvalidInputError, NotFoundError, UnavailableError } from '../errors.js';
import type { PlatformId } from '../providers/catalog.js';
import { ProviderError } from '../providers/errors.js';
import { campaignOpsFor } from '../providers/registry.js';
import type { BudgetChangeResult, Campaign, CampaignTarget, ProviderApp } from '../providers/types.js';
import { connectionRef } from '../views.js';
import { recordAudit } from './audit.js';
import { resolveConnection } from './connections.js';
import type { ServiceContext } from './context.js';
import { providerFailure, withDeadline } from './platform-calls.js';
import { providerApp } from './provider-app.js';
import { getValidAccessToken } from './tokens.js';

/**
 * Campaign operations on a connection: a valid token, the app (its developer token), the platform's
 * campaign interface. An API that refuses the access token (401) gets one forced refresh and one
 * retry; a second refusal means a person must connect again (exit 4).
 */

type Call<T> = (app: ProviderApp, token: Secret, target: CampaignTarget, signal: AbortSignal) => Promise<T>;

async function onConnection<T>(
  ctx: ServiceContext,
  connection: ConnectionRow,
  purpose: string,
  call: Call<T>,
): Promise<T> {
  const record = await appStore.getById(ctx.db, connection.appId);
  if (!record) throw new NotFoundError(`the app of connection ${connectionRef(connection)} was removed`);
  const app = await providerApp(ctx, ctx.db, record, { secrets: true });
  const target: CampaignTarget = {
    accountId: connection.externalAccountId,
    currency: connection.details.currency ?? null,
    details: connection.details,
    env: ctx.config.env,
  };
  const attempt = async (forceRefresh: boolean) => {
    const served = await getValidAccessToken(ctx, connection.id, {
      minTtlSeconds: forceRefresh ? 0 : 60,
      forceRefresh,
      purpose,
    });
    // A list may take many pages: up to 40 requests' worth of time in all, each request its own deadline.
    return withDeadline(ctx, (signal) => call(app, served.accessToken, target, signal), 40);
  };
  try {
    try {
      return await attempt(false);
    } catch (error) {
      // The platform refused a token we thought valid (revoked, rotated elsewhere): refresh once.
      if (!(error instanceof ProviderError && error.kind === 'unauthenticated')) throw error;
      return await attempt(true);
    }
  } catch (error) {
    throw providerFailure(error, connectionRef(connection));
  }
}

export interface CampaignList {
  connection: ConnectionRow;
  campaigns: Campaign[];
}

/**
 * `purpose`: what the token served for it is audited as (the command's name; the library says it is
 * the library, so that a service's calls are told apart from an operator's at the terminal).
 */
export async function listCampaigns(
  ctx: ServiceContext,
  ref: string,
  purpose = 'campaigns list',
): Promise<CampaignList> {
  const connection = await resolveConnection(ctx.db, ref);
  const ops = await campaignOpsFor(connection.platform as PlatformId);
  const campaigns = await onConnection(ctx, connection, purpose, (app, token, target, signal) =>
    ops.list(app, token, target, { signal }),
  );
  return { connection, campaigns };
}

/** One campaign as the platform has it now (to show old → new before changing it). */
export async function getCampaign(
  ctx: ServiceContext,
  ref: string,
  campaignId: string,
): Promise<CampaignList & { campaign: Campaign }> {
  const found = await listCampaigns(ctx, ref);
  const campaign = found.campaigns.find((c) => c.id === campaignId.trim());
  if (!campaign) {
    throw new NotFoundError(`no campaign ${campaignId} on ${connectionRef(found.connection)}`, {
      hint: `List them with \`credvault campaigns list ${connectionRef(found.connection)}\`.`,
    });
  }
  return { ...found, campaign };
}

export interface BudgetRequest {
  campaignId: string;
  /** The new daily budget in micros of the account's currency. */
  dailyBudgetMicros: bigint;
  validateOnly: boolean;
  allowShared?: boolean;
  /**
   * The campaign as the caller read it before asking (the CLI shows old → new from it), and the other
   * campaigns of the account: what the request and failure rows record as the budget before, and which
   * other campaigns a shared budget changes. Without it those rows have only the requested amount.
   */
  seen?: { campaign: Campaign; campaigns: Campaign[] };
  /** What the token served for it is audited as (default: the CLI command's name; see listCampaigns). */
  purpose?: string;
}

/** At most this many other campaign ids on an audit row of a shared budget (the count is always there). */
const SHARED_IDS_KEPT = 100;

/**
 * What an audit row says of the budget before a change: its amount (to put it back after an unknown
 * outcome) and, when it is shared, the other campaigns it changes too.
 */
export function budgetBefore(seen: BudgetRequest['seen']): Record<string, unknown> {
  if (!seen) return {};
  const { campaign, campaigns } = seen;
  const detail: Record<string, unknown> = {
    previous_micros: campaign.dailyBudgetMicros?.toString() ?? null,
    budget_level: campaign.budget.level,
    budget_id: campaign.budget.id,
    shared: campaign.budget.shared,
  };
  if (campaign.budget.shared) {
    const others =
      campaign.budget.id === null
        ? []
        : campaigns
            .filter((c) => c.id !== campaign.id && c.budget.id === campaign.budget.id)
            .map((c) => c.id);
    detail['shared_by'] = campaign.budget.sharedBy ?? others.length + 1;
    detail['shared_with'] = others.slice(0, SHARED_IDS_KEPT);
  }
  return detail;
}

/** Writes one audit row of a budget change or validation of `campaignId` on `connection`. */
function budgetAudit(
  ctx: ServiceContext,
  connection: ConnectionRow,
  campaignId: string,
  validateOnly: boolean,
) {
  const platform = connection.platform as PlatformId;
  return (outcome: 'success' | 'failure', detail: Record<string, unknown>, action?: string) =>
    ctx.transaction((tx) =>
      recordAudit(tx, ctx.actor, {
        action: action ?? (validateOnly ? 'campaign.budget.validate' : 'campaign.budget'),
        targetType: 'campaign',
        targetId: campaignId,
        connectionId: connection.id,
        outcome,
        detail: { platform, account: connection.externalAccountId, campaign: campaignId, ...detail },
      }),
    );
}

/**
 * Records a change or validation that credvault's own checks of the platform's rules refused before
 * anything was sent (below a known minimum, more digits than the currency has, a shared budget without
 * --shared, a campaign with no daily budget): on the platforms without a dry run these checks are the
 * validation, and a refused change is as much on record as one the platform refused. `requestedMicros`
 * is null when the amount could not be read in the currency. The error is thrown on by the caller.
 */
export async function recordBudgetRefusal(
  ctx: ServiceContext,
  connection: ConnectionRow,
  request: {
    campaignId: string;
    requestedMicros: bigint | null;
    validateOnly: boolean;
    seen: BudgetRequest['seen'];
  },
  error: CredvaultError,
): Promise<void> {
  await budgetAudit(
    ctx,
    connection,
    request.campaignId,
    request.validateOnly,
  )('failure', {
    requested_micros: request.requestedMicros?.toString() ?? null,
    ...budgetBefore(request.seen),
    error: error.code,
    refused_by: 'credvault',
    message: error.message.slice(0, 300),
  });
}

/**
 * Sets a campaign's daily budget (or validates it: the platform's dry run, or a simulation where it
 * has none). Audited with the old and new values, whatever the outcome. A change is on record before
 * it is sent (fail closed: no record, no change); when the outcome cannot be written after the
 * platform made the change, the result says why (`unrecorded`) rather than deny the change.
 */
export async function setCampaignBudget(
  ctx: ServiceContext,
  ref: string,
  request: BudgetRequest,
): Promise<BudgetChangeResult & { connection: ConnectionRow; unrecorded: string | null }> {
  const connection = await resolveConnection(ctx.db, ref);
  const platform = connection.platform as PlatformId;
  const ops = await campaignOpsFor(platform);
  const campaignId = request.campaignId.trim();
  if (!campaignId) throw new InvalidInputError('a campaign id is needed');
  const audit = budgetAudit(ctx, connection, campaignId, request.validateOnly);
  // The budget before (and the campaigns a shared one changes) on every row: after an unknown outcome
  // the request row is what an operator restores from.
  const before = budgetBefore(request.seen);
  if (!request.validateOnly) {
    await audit(
      'success',
      { requested_micros: request.dailyBudgetMicros.toString(), ...before },
      'campaign.budget.request',
    );
  }
  let result: BudgetChangeResult;
  try {
    result = await onConnection(
      ctx,
      connection,
      request.purpose ??
        (request.validateOnly ? 'campaigns set-budget --validate-only' : 'campaigns set-budget'),
      async (app, token, target, signal) =>
        ops.setDailyBudget(
          app,
          token,
          target,
          {
            campaignId,
            dailyBudgetMicros: request.dailyBudgetMicros,
            validateOnly: request.validateOnly,
            allowShared: request.allowShared === true,
          },
          { signal },
        ),
    );
  } catch (error) {
    // A change sent and never answered (a timeout, a connection lost) may have been made.
    const cause = error instanceof CredvaultError ? error.cause : error;
    const unanswered = !request.validateOnly && cause instanceof ProviderError && cause.inDoubt;
    const code = error instanceof CredvaultError ? error.code : 'internal';
    await audit('failure', {
      requested_micros: request.dailyBudgetMicros.toString(),
      ...before,
      error: code,
      ...(unanswered ? { result: 'unknown' } : {}),
      message: error instanceof Error ? error.message.slice(0, 300) : null,
    }).catch(() => {});
    if (unanswered) {
      throw new UnavailableError(
        `${error instanceof Error ? error.message : 'the platform did not answer'}; the platform may or may not have changed the budget of campaign ${campaignId}`,
        {
          cause: error,
          hint: `Check with \`credvault campaigns list ${connectionRef(connection)}\` before trying again (setting the same amount again is safe).`,
        },
      );
    }
    throw error;
  }
  const unrecorded = await audit('success', {
    ...before,
    mode: result.mode,
    currency: result.campaign.currency,
    previous_micros: result.previousMicros?.toString() ?? null,
    new_micros: result.newMicros.toString(),
    budget_level: result.target.level,
    budget_id: result.target.id,
    shared: result.campaign.budget.shared,
  }).then(
    () => null,
    (error: unknown) => {
      // The change is made and its request is on record: say so rather than deny it.
      if (request.validateOnly) throw error;
      return error instanceof Error ? error.message : String(error);
    },
  );
  return { ...result, connection, unrecorded };
}
