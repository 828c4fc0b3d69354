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
/**
 * Microsoft Advertising's minimum daily budget per account currency, from the "Bid and Budget
 * Currencies" table of https://learn.microsoft.com/advertising/guides/currencies ("subject to
 * change"; the guide names currencies, e.g. USDollar, keyed here by ISO code). Amounts in the
 * currency, as the guide gives them (CLP 5.1 although the peso has no minor unit). Rows ARS to DKK
 * checked against the guide again on 2026-11-27 (CNY was missing); the rest as transcribed before.
 */
export const MICROSOFT_MIN_DAILY_BUDGET: Readonly<Record<string, string>> = {
  ARS: '0.05',
  AUD: '0.05',
  BRL: '0.1',
  CAD: '0.05',
  CHF: '0.05',
  CLP: '5.1',
  CNY: '30',
  COP: '18.05',
  DKK: '0.06',
  EUR: '0.05',
  GBP: '0.05',
  HKD: '1',
  IDR: '480',
  INR: '0.82',
  MXN: '0.14',
  MYR: '0.15',
  NOK: '0.06',
  NZD: '0.05',
  PEN: '0.03',
  PHP: '2',
  PLN: '0.05',
  SEK: '0.07',
  SGD: '0.11',
  THB: '2',
  TRY: '0.05',
  TWD: '100',
  USD: '0.05',
  VEF: '0.05',
  ZAR: '0.1',
};

/** '0.82' → 820,000 micros (the table's amounts have at most six decimals). */
function decimalMicros(amount: string): bigint {
  const [whole, fraction = ''] = amount.split('.');
  return BigInt(whole!) * 1_000_000n + BigInt(fraction.padEnd(6, '0'));
}

/** The platform's minimum daily budget in the account's currency, in micros, where it is known. */
function minimumDailyMicros(platform: PlatformId, currency: string): bigint | undefined {
  switch (platform) {
    case 'microsoft_ads': {
      const amount = MICROSOFT_MIN_DAILY_BUDGET[currency];
      return amount === undefined ? undefined : decimalMicros(amount);
    }
    // LinkedIn: 10 a day in USD for most campaign types [unconfirmed: not in shared/providers.md;
    // other currencies are not checked here and left to LinkedIn, whose 400 is passed on].
    case 'linkedin_ads':
      return currency === 'USD' ? 10_000_000n : undefined;
    // Reddit: 5 a day in USD [unconfirmed: third-party documentation of the Ads API]; none is
    // documented for other currencies, which are left to Reddit, whose 400 is passed on.
    case 'reddit_ads':
      return currency === 'USD' ? 5_000_000n : undefined;
    default:
      return undefined;
  }
}

export function checkDailyBudget(platform: PlatformId, micros: bigint, currency: string | null): void {
  if (micros <= 0n) throw new InvalidInputError('a daily budget must be more than zero');
  if (!currency) return;
  if (!isWholeMinorUnits(micros, currency)) {
    throw new InvalidInputError(
      `${formatMicros(micros, currency)} ${currency} is not a whole number of the currency's smallest unit`,
      { hint: `Give the amount with at most the digits ${currency} has after the decimal point.` },
    );
  }
  const minimum = minimumDailyMicros(platform, currency);
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

/**
 * Why a campaign's currency is not known, when looking it up failed (Reddit reads it from the
 * businesses' ad accounts when the connection does not know it: a .env import). The list still shows
 * without it (amounts in micros); a budget change cannot, and says this cause rather than "the
 * platform did not say". Kept beside the campaigns a list made, in this process only.
 */
const currencyLookupFailures = new WeakMap<Campaign, unknown>();

export function noteCurrencyLookupFailure(campaigns: Campaign[], error: unknown): void {
  for (const campaign of campaigns) currencyLookupFailures.set(campaign, error);
}

export function currencyLookupFailure(campaign: Campaign): unknown {
  return currencyLookupFailures.get(campaign);
}
