import { z } from 'zod';
import { NO_CONTROL_CHARACTERS } from '../../platform/http/schemas.ts';
import { MAX_AMOUNT_MICROS } from './billing.ledger.ts';
import { STANDING_STATES } from './billing.standing.tables.ts';
import { TRANSACTION_KINDS } from './billing.tables.ts';

/** Request and response shapes of the billing routes. Money is integer micro-units (1 USD = 1,000,000). */

const Id = z.string().min(1).max(64);
const Micros = z.number().int().min(1).max(MAX_AMOUNT_MICROS);
const Memo = z.string().trim().min(1).max(500).regex(NO_CONTROL_CHARACTERS, 'no control characters');
const IdempotencyKey = z
  .string()
  .min(8)
  .max(200)
  .regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : -')
  .describe('Makes a retried call happen once; the same key with other parameters is refused');

export const WorkspaceParams = z.strictObject({ workspaceId: Id });
export const OperatorWorkspaceParams = z.strictObject({ id: Id });

export const BalanceView = z.object({
  workspaceId: z.string(),
  availableMicros: z.number().int(),
  heldMicros: z.number().int().describe('Reserved for calls in flight'),
  plan: z.string(),
});

export const TransactionView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  kind: z.enum(TRANSACTION_KINDS),
  idempotencyKey: z.string(),
  amountMicros: z.number().int(),
  reservationId: z.string().nullable(),
  availableAfterMicros: z.number().int(),
  heldAfterMicros: z.number().int(),
  actor: z.object({ type: z.string(), id: z.string() }),
  memo: z.string().nullable(),
  createdAt: z.string(),
});

export const GrantView = TransactionView.extend({
  expiresAt: z.string().optional().describe('When the promotional credits of this grant expire'),
});

export const EntriesQuery = z.strictObject({
  cursor: Id.optional().describe('The last id of the previous page'),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
export const EntryList = z.object({ data: z.array(TransactionView), nextCursor: z.string().nullable() });

export const GrantBody = z.strictObject({
  workspaceId: Id,
  amountMicros: Micros,
  idempotencyKey: IdempotencyKey,
  memo: Memo.optional(),
  expiresAt: z.iso
    .datetime({ offset: true })
    .optional()
    .describe('Makes the grant promotional: what is left of it at this time is taken back'),
});

export const AdjustBody = z.strictObject({
  workspaceId: Id,
  deltaMicros: z
    .number()
    .int()
    .min(-MAX_AMOUNT_MICROS)
    .max(MAX_AMOUNT_MICROS)
    .refine((v) => v !== 0, 'not zero'),
  idempotencyKey: IdempotencyKey,
  memo: Memo.describe('Why: kept with the entry and in the audit log'),
});

export const VerifyReportView = z.object({
  workspaceId: z.string(),
  ok: z.boolean(),
  availableMicros: z.number().int(),
  heldMicros: z.number().int(),
  postedAvailableMicros: z.number().int(),
  postedHeldMicros: z.number().int(),
  openReservationsMicros: z.number().int(),
  unbalancedTransactions: z.number().int(),
});
export const VerifyAnswer = z.object({
  ok: z.boolean(),
  workspaces: z.number().int(),
  reports: z.array(VerifyReportView),
});

export const CheckoutBody = z.strictObject({
  amountMicros: z
    .number()
    .int()
    .min(1_000_000)
    .max(10_000_000_000)
    .describe('What to buy, in micro-units (whole cents, 1 to 10,000 USD)'),
  currency: z.string().min(1).max(10).optional().describe('usd (the only currency credits are kept in)'),
  autoTopup: z.boolean().optional().describe('Save the card at the processor for auto top-up (off-session charges)'),
});
export const CheckoutView = z.object({ paymentId: z.string(), url: z.string(), amountMicros: z.number().int() });

export const PlanBody = z.strictObject({ plan: z.string().min(1).max(40) });
export const PlanView = z.object({ workspaceId: z.string(), plan: z.string(), startedAt: z.string() });

const Time = z.string().nullable();
export const StandingView = z.object({
  workspaceId: z.string(),
  state: z
    .enum(STANDING_STATES)
    .describe('ok; low (credits below BERTH_LOW_BALANCE_USD); exhausted (below BERTH_EXHAUSTED_BALANCE_USD)'),
  since: Time.describe('When it entered this state (null: never below a threshold)'),
  lowBalanceNotifiedAt: Time,
  exhaustedAt: Time.describe('When the credits ran out (the current or last episode)'),
  exhaustedNotifiedAt: Time,
  graceEndsAt: Time.describe("While exhausted: when deployments' runtime data are deleted (null: never)"),
  graceWarnedAt: Time,
  graceExpiredAt: Time,
  resumedAt: Time.describe('When credits came back after the last episode'),
});
export const StandingQuery = z.strictObject({
  state: z.enum(STANDING_STATES).optional(),
  cursor: Id.optional().describe('The last workspaceId of the previous page'),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
export const StandingList = z.object({ data: z.array(StandingView), nextCursor: z.string().nullable() });

export const BudgetBody = z.strictObject({
  keyId: Id.nullable()
    .optional()
    .describe("An API key of the workspace: the budget limits that key's calls (absent: the whole workspace)"),
  period: z.enum(['day', 'month']).describe('A UTC day or a calendar month'),
  limitMicros: Micros.describe('The most the period may spend, in micro-units'),
});
export const BudgetParams = z.strictObject({ workspaceId: Id, budgetId: Id });
export const BudgetView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  keyId: z.string().nullable(),
  period: z.enum(['day', 'month']),
  limitMicros: z.number().int(),
  current: z.object({
    start: z.string(),
    end: z.string(),
    spentMicros: z.number().int(),
    heldMicros: z.number().int().describe('Reserved by calls in flight'),
    remainingMicros: z.number().int(),
  }),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export const BudgetList = z.object({ data: z.array(BudgetView) });

export const PlanDetails = z.object({
  id: z.string(),
  name: z.string(),
  monthlyCreditsMicros: z.number().int(),
  rateLimitRpm: z.number().int().nullable().describe('Gateway requests per minute for the whole workspace'),
  seats: z.number().int().nullable().describe('Members and pending invitations at most'),
  auditRetentionMonths: z.number().int(),
  features: z.array(z.string()),
});
export const PlanList = z.object({ data: z.array(PlanDetails) });
export const WorkspacePlanView = z.object({
  workspaceId: z.string(),
  plan: PlanDetails,
  since: z.string().nullable(),
  history: z.array(z.object({ plan: z.string(), startedAt: z.string(), endedAt: z.string().nullable() })),
});
