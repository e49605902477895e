import { z } from 'zod';

/**
 * Request and response shapes of statements (invoices), the usage-cost breakdown, payments
 * and receipts. Money is integer micro-units (1 USD = 1,000,000). Periods and dates are
 * checked by the services (400 `invalid_period` / `invalid_date_range`), so the schemas
 * only bound their length.
 */

const Id = z.string().min(1).max(64);

export const StatementParams = z.strictObject({
  workspaceId: Id,
  period: z.string().min(1).max(20).describe('A calendar month (UTC), YYYY-MM'),
});
export const PaymentParams = z.strictObject({ workspaceId: Id, paymentId: Id });

export const StatementsQuery = z.strictObject({
  cursor: z.string().max(20).optional().describe('The last period of the previous page (YYYY-MM)'),
  limit: z.coerce.number().int().min(1).max(100).optional(),
});
export const PaymentsQuery = z.strictObject({
  cursor: Id.optional().describe('The last id of the previous page'),
  limit: z.coerce.number().int().min(1).max(100).optional(),
});

export const USAGE_GROUPS = ['day', 'model', 'key', 'provider'] as const;
export const UsageQuery = z.strictObject({
  from: z.string().max(40).optional().describe('First day, YYYY-MM-DD (UTC; default: the first of this month)'),
  to: z.string().max(40).optional().describe('Last day, included, YYYY-MM-DD (UTC; default: today)'),
  groupBy: z.enum(USAGE_GROUPS).optional().describe('default day'),
});

/** What a group of calls used and cost (statements and the usage-cost breakdown). */
const UsageFigures = z.object({
  requests: z.number().int(),
  errors: z.number().int(),
  inputTokens: z.number().int(),
  outputTokens: z.number().int(),
  cachedTokens: z.number().int(),
  reasoningTokens: z.number().int(),
  costMicros: z.number().int(),
});

export const UsageLineView = UsageFigures.extend({
  name: z.string().describe("The model, or the API key's id ('' for calls made without a key)"),
});

export const StatementView = z.object({
  workspaceId: z.string(),
  period: z.string(),
  number: z.string().nullable().describe('Set once the month is closed'),
  status: z.enum(['closed', 'draft']),
  periodStart: z.string(),
  periodEnd: z.string(),
  asOf: z.string().describe('The figures include every movement made before this time'),
  closedAt: z.string().nullable(),
  currency: z.literal('usd'),
  openingBalanceMicros: z.number().int().describe('available + reserved at the start of the month'),
  grantedMicros: z.number().int().describe('plan and promotional credits'),
  boughtMicros: z.number().int().describe('top-ups'),
  refundedMicros: z.number().int(),
  adjustedMicros: z.number().int().describe("operators' corrections, signed"),
  expiredMicros: z.number().int(),
  usedMicros: z.number().int().describe('what the ledger settled for calls'),
  closingBalanceMicros: z.number().int(),
  settlements: z
    .number()
    .int()
    .describe('settlements the ledger made in the month (a credit lease settles many calls in one)'),
  reconciled: z
    .boolean()
    .describe('opening + granted + bought - refunded + adjusted - expired - used = closing, and the ledger balances'),
  usage: z.object({
    requests: z.number().int(),
    costMicros: z.number().int().describe('the metered cost of the usage events'),
    matchesLedger: z.boolean(),
    differenceMicros: z.number().int().describe('usage events minus ledger'),
    note: z.string().nullable(),
    byModel: z.array(UsageLineView),
    byKey: z.array(UsageLineView),
  }),
});

export const StatementSummary = StatementView.pick({
  workspaceId: true,
  period: true,
  number: true,
  status: true,
  periodStart: true,
  periodEnd: true,
  closedAt: true,
  openingBalanceMicros: true,
  closingBalanceMicros: true,
  boughtMicros: true,
  usedMicros: true,
  reconciled: true,
});
export const StatementList = z.object({ data: z.array(StatementSummary), nextCursor: z.string().nullable() });

export const UsageAggregateLine = UsageFigures.extend({ group: z.string() });
export const UsageBreakdown = z.object({
  workspaceId: z.string(),
  from: z.string(),
  to: z.string(),
  groupBy: z.enum(USAGE_GROUPS),
  requests: z.number().int(),
  costMicros: z.number().int(),
  data: z.array(UsageAggregateLine),
});

export const PaymentView = z.object({
  id: z.string(),
  amountMicros: z.number().int(),
  currency: z.string(),
  status: z.enum(['pending', 'paid', 'expired']),
  cardBrand: z.string().nullable(),
  cardLast4: z.string().nullable(),
  createdAt: z.string(),
  paidAt: z.string().nullable(),
});
export const PaymentList = z.object({ data: z.array(PaymentView), nextCursor: z.string().nullable() });

export const ReceiptView = z.object({
  paymentId: z.string(),
  workspaceId: z.string(),
  amountMicros: z.number().int(),
  currency: z.string(),
  paidAt: z.string(),
  cardBrand: z.string().nullable(),
  cardLast4: z.string().nullable(),
  transactionId: z.string().nullable(),
  balanceAfterMicros: z.number().int().nullable().describe('Credits available right after the top-up'),
});

export type StatementView = z.infer<typeof StatementView>;
export type StatementSummary = z.infer<typeof StatementSummary>;
export type UsageBreakdown = z.infer<typeof UsageBreakdown>;
export type PaymentView = z.infer<typeof PaymentView>;
export type ReceiptView = z.infer<typeof ReceiptView>;
