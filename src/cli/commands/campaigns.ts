import type { ConnectionRow } from '../../db/store/connections.js';
import { CredvaultError, InvalidInputError } from '../../errors.js';
import { assertSettable, checkDailyBudget, currencyLookupFailure } from '../../providers/campaigns/common.js';
import type { PlatformId } from '../../providers/catalog.js';
import { ProviderError } from '../../providers/errors.js';
import { displayMoney, formatMicros, parseAmount } from '../../providers/money.js';
import type { BudgetChangeResult, Campaign } from '../../providers/types.js';
import {
  getCampaign,
  listCampaigns,
  recordBudgetRefusal,
  setCampaignBudget,
} from '../../services/campaigns.js';
import { errorForKind, providerFailure } from '../../services/platform-calls.js';
import { connectionRef } from '../../views.js';
import { withContext } from '../context.js';
import { confirm } from '../input.js';
import type { Column } from '../output.js';
import type { Runtime } from '../run.js';

/** A campaign as JSON: money as exact decimal strings and micros as strings (never a float). */
export function campaignJson(campaign: Campaign) {
  const { currency, dailyBudgetMicros: micros } = campaign;
  return {
    id: campaign.id,
    name: campaign.name,
    status: campaign.status,
    currency,
    daily_budget: micros === null ? null : currency ? formatMicros(micros, currency) : null,
    daily_budget_micros: micros === null ? null : micros.toString(),
    budget_level: campaign.budget.level,
    budget_id: campaign.budget.id,
    shared_budget: campaign.budget.shared,
    shared_by: campaign.budget.sharedBy,
    budget_note: campaign.budget.note,
  };
}

const COLUMNS: Column<Campaign>[] = [
  { header: 'ID', value: (c) => c.id },
  { header: 'NAME', value: (c) => c.name },
  { header: 'STATUS', value: (c) => c.status },
  { header: 'DAILY BUDGET', value: (c) => displayMoney(c.dailyBudgetMicros, c.currency) },
  {
    header: 'SHARED',
    value: (c) =>
      c.budget.shared ? (c.budget.sharedBy ? `yes (${c.budget.sharedBy} campaigns)` : 'yes') : 'no',
    style: (c, text, s) => (c.budget.shared ? s.yellow(text) : text),
  },
  { header: 'BUDGET ON', value: (c) => c.budget.level.replace('_', ' ') },
];

export async function list(rt: Runtime, ref: string): Promise<void> {
  const { connection, campaigns } = await withContext(rt, (ctx) => listCampaigns(ctx, ref));
  rt.out.list(campaigns, campaignJson, COLUMNS, `no campaigns in ${connectionRef(connection)}`);
  // What the table cannot say (a budget split over ad groups, on a shared budget…), below it on stderr.
  for (const c of campaigns) if (c.budget.note) rt.out.note(`${c.id}: ${c.budget.note}`);
}

export interface SetBudgetOptions {
  daily?: string;
  validateOnly?: boolean;
  yes?: boolean;
  shared?: boolean;
}

/** `campaigns list --json`: one element. */
export type CampaignJson = ReturnType<typeof campaignJson>;
/** `campaigns set-budget --json`. */
export type BudgetResultJson = ReturnType<typeof resultJson>;

function resultJson(result: BudgetChangeResult & { connection: { id: string } }) {
  const currency = result.campaign.currency;
  const money = (micros: bigint | null) =>
    micros === null ? null : currency ? formatMicros(micros, currency) : null;
  return {
    connection_id: result.connection.id,
    campaign_id: result.campaign.id,
    campaign_name: result.campaign.name,
    mode: result.mode,
    currency,
    previous_daily_budget: money(result.previousMicros),
    new_daily_budget: money(result.newMicros),
    previous_micros: result.previousMicros?.toString() ?? null,
    new_micros: result.newMicros.toString(),
    budget_level: result.target.level,
    budget_id: result.target.id,
  };
}

/**
 * Sets a campaign's daily budget from an amount in the account's currency, as the operator types it.
 * The campaign is read first so the operator sees old → new (and the shared-budget warning) before
 * anything changes; on a terminal that is a question, elsewhere `--yes` is the answer.
 */
/**
 * A campaign whose currency is not known cannot take an amount. Where looking it up failed (Reddit
 * reads it from the businesses' ad accounts when the connection does not know it), that failure is
 * the error, with its own remedy: a 403 is a grant that may not read them (connect again), a 5xx a
 * retry later. Otherwise the platform did not say it.
 */
function unknownCurrency(connection: ConnectionRow, campaign: Campaign): Error {
  const ref = connectionRef(connection);
  const failure = currencyLookupFailure(campaign);
  const what = `the currency of campaign ${campaign.id} is not known (the connection has none stored), and looking it up failed`;
  if (failure instanceof ProviderError) {
    if (failure.kind === 'forbidden' || failure.kind === 'unauthenticated') {
      return errorForKind(failure.kind, `${ref}: ${what}: ${failure.message}`, {
        cause: failure,
        hint: `The grant may not read the ad accounts of its businesses (where the currency is): connect again, allowing it, with \`credvault connect ${connection.platform} --account ${connection.externalAccountId}\`.`,
      });
    }
    return providerFailure(failure, `${ref}: ${what}`) as Error;
  }
  if (failure !== undefined) return failure instanceof Error ? failure : new Error(String(failure));
  return new InvalidInputError(`the currency of campaign ${campaign.id} is not known`, {
    hint: 'The platform did not say it; this is a bug worth reporting.',
  });
}

export async function setBudget(
  rt: Runtime,
  ref: string,
  campaignId: string,
  opts: SetBudgetOptions,
): Promise<void> {
  if (opts.daily === undefined) {
    throw new InvalidInputError('--daily AMOUNT is needed', {
      hint: 'Give the new daily budget in the account currency, for example --daily 75.50.',
    });
  }
  // Its form before any platform call (the currency's decimals once the campaign says which).
  parseAmount(opts.daily, null);
  const validateOnly = opts.validateOnly === true;
  const mustAsk = !validateOnly && opts.yes !== true;
  if (mustAsk && !rt.interactive) {
    throw new InvalidInputError('changing a budget needs confirmation, and there is no terminal to ask on', {
      hint: 'Run it again with --yes, or with --validate-only to check the change without making it.',
    });
  }
  const { connection, campaign, campaigns } = await withContext(rt, (ctx) =>
    getCampaign(ctx, ref, campaignId),
  );
  if (!campaign.currency) throw unknownCurrency(connection, campaign);
  const seen = { campaign, campaigns };
  // What the platform module would refuse (more digits than the currency has, no daily budget, a
  // shared one, below a known minimum) is said before asking, not after; and audited, as a refusal
  // by the platform is: on the platforms without a dry run these checks are the validation. A typo in
  // the amount's form (refused above, before any call) is not a budget change and is not audited.
  const platform = connection.platform as PlatformId;
  let micros: bigint | null = null;
  try {
    micros = parseAmount(opts.daily, campaign.currency);
    assertSettable(
      campaign,
      { campaignId: campaign.id, dailyBudgetMicros: micros, validateOnly, allowShared: opts.shared === true },
      platform,
    );
    checkDailyBudget(platform, micros, campaign.currency);
  } catch (error) {
    if (error instanceof CredvaultError) {
      const requestedMicros = micros;
      await withContext(rt, (ctx) =>
        recordBudgetRefusal(
          ctx,
          connection,
          { campaignId: campaign.id, requestedMicros, validateOnly, seen },
          error,
        ),
      ).catch((failure: unknown) =>
        rt.out.warn(
          `the refusal could not be written to the audit log: ${failure instanceof Error ? failure.message : String(failure)}`,
        ),
      );
    }
    throw error;
  }
  const before = displayMoney(campaign.dailyBudgetMicros, campaign.currency) ?? 'none';
  const after = displayMoney(micros, campaign.currency);
  const where = `${connectionRef(connection)} campaign ${campaign.id} (${campaign.name})`;
  if (campaign.budget.shared) {
    // Only reached with --shared (assertSettable refused the rest).
    rt.out.warn(
      `this campaign's budget is shared${campaign.budget.sharedBy ? ` by ${campaign.budget.sharedBy} campaigns` : ''}: changing it changes all of them`,
    );
  }
  if (mustAsk) {
    if (campaign.budget.note) rt.out.note(`note: ${campaign.budget.note}`);
    rt.out.note(`${where}: daily budget ${before} → ${after}`);
    if (!(await confirm(rt, 'Change it?'))) {
      throw new InvalidInputError('nothing changed: the change was not confirmed');
    }
  }
  const result = await withContext(rt, (ctx) =>
    setCampaignBudget(ctx, ref, {
      campaignId: campaign.id,
      dailyBudgetMicros: micros,
      validateOnly,
      allowShared: opts.shared === true,
      seen,
    }),
  );
  if (result.unrecorded) {
    rt.out.warn(
      `the change was made, but its outcome could not be written to the audit log (its request was): ${result.unrecorded}`,
    );
  }
  if (rt.out.json) return rt.out.writeJson(resultJson(result));
  const previous = displayMoney(result.previousMicros, result.campaign.currency) ?? 'none';
  const next = displayMoney(result.newMicros, result.campaign.currency);
  const line = `${where}: daily budget ${previous} → ${next}`;
  if (result.mode === 'applied') rt.out.success(line);
  else if (result.mode === 'validated')
    rt.out.success(`${line} is valid (checked by the platform's own dry run; nothing changed)`);
  else
    rt.out.success(
      `${line} passes credvault's checks (simulated: the platform has no dry run, nothing was sent)`,
    );
}
