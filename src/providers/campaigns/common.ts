import { InvalidInputError, NotFoundError } from '../../errors.js';
import type { PlatformId } from '../catalog.js';
import { PLATFORMS } from '../catalog.js';
import { displayMoney, formatMicros, isWholeMinorUnits } from '../money.js';
import type { BudgetChange, BudgetChangeResult, Campaign } from '../types.js';

/**
 * What the platforms without a dry run would refuse, checked here so that `validateOnly` means
 * something on them too ("simulated"): the amount is a whole number of the currency's smallest unit
 * and at least the platform's minimum daily budget where that is known.
 */
const MINIMUM_DAILY_MICROS: Partial<Record<PlatformId, Record<string, bigint>>> = {
  // Microsoft Advertising: 0.05 a day in USD and EUR (learn.microsoft.com, "Currencies").
  microsoft_ads: { USD: 50_000n, EUR: 50_000n },
  // LinkedIn: 10 a day in USD for most campaign types [unconfirmed: not in shared/providers.md;
  // other currencies are not checked here and left to LinkedIn, whose 400 is passed on].
  linkedin_ads: { USD: 10_000_000n },
  // Reddit: 5 a day in USD [unconfirmed: third-party documentation of the Ads API].
  reddit_ads: { USD: 5_000_000n },
};

export function checkDailyBudget(platform: PlatformId, micros: bigint, currency: string | null): void {
  if (micros <= 0n) throw new InvalidInputError('a daily budget must be more than zero');
  if (!currency) return;
  if (!isWholeMinorUnits(micros, currency)) {
    throw new InvalidInputError(
      `${formatMicros(micros, currency)} ${currency} is not a whole number of the currency's smallest unit`,
      { hint: `Give the amount with at most the digits ${currency} has after the decimal point.` },
    );
  }
  const minimum = MINIMUM_DAILY_MICROS[platform]?.[currency];
  if (minimum !== undefined && micros < minimum) {
    throw new InvalidInputError(
      `${PLATFORMS[platform].displayName} refuses a daily budget below ${displayMoney(minimum, currency)} (asked: ${displayMoney(micros, currency)})`,
    );
  }
}

export function findCampaign(campaigns: Campaign[], id: string, platform: PlatformId): Campaign {
  const campaign = campaigns.find((c) => c.id === id);
  if (!campaign) {
    throw new NotFoundError(`no ${PLATFORMS[platform].displayName} campaign ${id} in this account`, {
      hint: 'List them with `credvault campaigns list CONN`.',
    });
  }
  return campaign;
}

/** Refuses a budget that the campaign cannot set, with the platform's reason. */
export function assertSettable(campaign: Campaign, change: BudgetChange, platform: PlatformId): void {
  const { budget } = campaign;
  if (budget.level === 'none') {
    throw new InvalidInputError(
      `${PLATFORMS[platform].displayName} campaign ${campaign.id} has no daily budget to change${budget.note ? `: ${budget.note}` : ''}`,
    );
  }
  if (budget.shared && budget.note) {
    // The note says why: the budget is set as a budget of its own, not through the campaign
    // (Microsoft: CampaignServiceCannotUpdateSharedBudget). No flag changes that.
    throw new InvalidInputError(
      `${PLATFORMS[platform].displayName} campaign ${campaign.id} uses shared budget ${budget.id}; its daily budget is the shared budget's amount and cannot be set on the campaign`,
      { hint: `Change the shared budget itself (${budget.note}), or move the campaign off it.` },
    );
  }
  if (budget.shared && !change.allowShared) {
    throw new InvalidInputError(
      `campaign ${campaign.id}'s budget is shared${budget.sharedBy ? ` by ${budget.sharedBy} campaigns` : ''}: changing it changes every campaign that uses it`,
      { hint: 'Run again with --shared (library: allowShared: true) to change it for all of them.' },
    );
  }
}

export function simulated(campaign: Campaign, change: BudgetChange): BudgetChangeResult {
  return {
    campaign,
    previousMicros: campaign.dailyBudgetMicros,
    newMicros: change.dailyBudgetMicros,
    mode: 'simulated',
    target: { level: campaign.budget.level, id: campaign.budget.id ?? campaign.id },
  };
}
