import { bigint, integer, pgTable, primaryKey, text, unique } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// The credit ledger (see migrations/0015_billing.sql): integer micro-units, double entry.

/** Who receives payment data outside the installation (the data map's `recipients`). */
export const PAYMENT_PROCESSOR = ['Payment processor (Stripe), when the operator turns card payments on'] as const;

export const creditBalances = pgTable('credit_balances', {
  workspaceId: text('workspace_id').primaryKey(),
  availableMicros: bigint('available_micros', { mode: 'number' }).notNull(),
  heldMicros: bigint('held_micros', { mode: 'number' }).notNull(),
  updatedAt: ts('updated_at').notNull(),
  /** How many budgets the workspace has: the ledger reads budgets only where this is not 0. */
  budgetCount: integer('budget_count').notNull().default(0),
});

export const TRANSACTION_KINDS = [
  'grant',
  'topup',
  'refund',
  'reserve',
  'settle',
  'release',
  'adjust',
  'expire',
  // Written by retention only: the balances of the expired (older than 7 years) transactions it replaces.
  'carry_forward',
] as const;
export type TransactionKind = (typeof TRANSACTION_KINDS)[number];

export const ledgerTransactions = pgTable(
  'ledger_transactions',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    kind: text('kind', { enum: TRANSACTION_KINDS }).notNull(),
    idempotencyKey: text('idempotency_key').notNull(),
    requestHash: text('request_hash').notNull(),
    amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
    reservationId: text('reservation_id'),
    availableAfterMicros: bigint('available_after_micros', { mode: 'number' }).notNull(),
    heldAfterMicros: bigint('held_after_micros', { mode: 'number' }).notNull(),
    actorType: text('actor_type', { enum: ['user', 'api_key', 'system'] }).notNull(),
    actorId: text('actor_id').notNull(),
    memo: text('memo'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [unique().on(t.workspaceId, t.idempotencyKey)],
);

export const ledgerPostings = pgTable(
  'ledger_postings',
  {
    transactionId: text('transaction_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    account: text('account').notNull(),
    amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.transactionId, t.account] })],
);

export const RESERVATION_STATUSES = ['open', 'settled', 'released', 'expired'] as const;
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];

export const creditReservations = pgTable('credit_reservations', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  keyId: text('key_id'),
  requestId: text('request_id').notNull(),
  amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
  status: text('status', { enum: RESERVATION_STATUSES }).notNull(),
  settledMicros: bigint('settled_micros', { mode: 'number' }),
  expiresAt: ts('expires_at').notNull(),
  createdAt: ts('created_at').notNull(),
  resolvedAt: ts('resolved_at'),
  /** The budgets the reservation counted against (null: none). */
  budgetIds: text('budget_ids').array(),
  /** `call`: one call's worst case; `lease`: credits a gateway replica holds for many calls. */
  kind: text('kind', { enum: ['call', 'lease'] }).notNull(),
});

export const workspacePlans = pgTable('workspace_plans', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  plan: text('plan').notNull(),
  startedAt: ts('started_at').notNull(),
  endedAt: ts('ended_at'),
  changedBy: text('changed_by'),
});

export const payments = pgTable('payments', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  processor: text('processor', { enum: ['stripe'] }).notNull(),
  checkoutId: text('checkout_id').notNull().unique(),
  amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
  currency: text('currency', { enum: ['usd'] }).notNull(),
  status: text('status', { enum: ['pending', 'paid', 'expired'] }).notNull(),
  cardBrand: text('card_brand'),
  cardLast4: text('card_last4'),
  postalCode: text('postal_code'),
  transactionId: text('transaction_id'),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  paidAt: ts('paid_at'),
});

export const paymentEvents = pgTable('payment_events', {
  id: text('id').primaryKey(),
  processor: text('processor').notNull(),
  type: text('type').notNull(),
  workspaceId: text('workspace_id'),
  receivedAt: ts('received_at').notNull(),
});

export type BalanceRow = typeof creditBalances.$inferSelect;
export type PaymentRow = typeof payments.$inferSelect;
export type TransactionRow = typeof ledgerTransactions.$inferSelect;
export type PostingRow = typeof ledgerPostings.$inferSelect;
export type ReservationRow = typeof creditReservations.$inferSelect;
export type PlanRow = typeof workspacePlans.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const billingTables = [
  mapTable(creditBalances, {
    purpose: "A workspace's spendable and reserved credits, kept equal to the sum of its ledger postings",
    basis: 'contract',
    // The live balance: kept (expired postings are carried forward, so it never changes).
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      availableMicros: billing(),
      heldMicros: billing(),
      updatedAt: billing(),
      budgetCount: billing('Whether spend limits apply to the workspace'),
    },
  }),
  mapTable(ledgerTransactions, {
    purpose:
      'Every movement of credits (grants, top-ups, refunds, reservations, settlements, adjustments), and the balances carried forward from expired ones',
    basis: 'legal_obligation',
    // 7 years from `created_at`, by billing's ledger retention (billing.retention.ts): expired
    // transactions are replaced by one carried-forward balance per workspace.
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      kind: billing(),
      idempotencyKey: col('identifier', false, { purpose: 'Makes a retried movement happen once' }),
      requestHash: billing('Detects a retried key with different parameters'),
      amountMicros: billing(),
      reservationId: col('identifier', false),
      availableAfterMicros: billing(),
      heldAfterMicros: billing(),
      actorType: col('audit', false),
      actorId: col('identifier', true, { purpose: 'Who moved the credits (an operator, a member, or the system)' }),
      memo: col('billing', false, { purpose: "The operator's reason for a grant or adjustment" }),
      createdAt: billing(),
    },
  }),
  mapTable(ledgerPostings, {
    purpose: 'The two or more sides of each ledger transaction, summing to zero',
    basis: 'legal_obligation',
    // With their transaction (billing.retention.ts).
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      transactionId: col('identifier', false),
      workspaceId: col('identifier', false),
      account: billing(),
      amountMicros: billing(),
    },
  }),
  mapTable(creditReservations, {
    purpose: 'The worst-case cost of calls in flight, held until they are settled or released',
    basis: 'contract',
    // A resolved reservation goes with the last of its ledger transactions (billing.retention.ts);
    // an open one is kept.
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      keyId: col('identifier', false, { purpose: 'The API key whose call holds the credits' }),
      requestId: col('identifier', false),
      amountMicros: billing(),
      status: billing(),
      settledMicros: billing(),
      expiresAt: billing(),
      createdAt: billing(),
      resolvedAt: billing(),
      budgetIds: col('identifier', false, { purpose: 'The budgets the reserved amount counts against' }),
      kind: billing('Whether the reservation holds one call or a lease for many'),
    },
  }),
  mapTable(workspacePlans, {
    purpose: "A workspace's plan and the history of its changes",
    basis: 'contract',
    retention: 'billing_7_years',
    // A plan goes 7 years after it ended; the current one (not ended) is kept.
    retentionFrom: 'ended_at',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      plan: billing(),
      startedAt: billing(),
      endedAt: billing(),
      changedBy: col('identifier', true, { purpose: 'The operator who changed the plan' }),
    },
  }),
  mapTable(payments, {
    purpose: 'Top-ups bought through the payment processor (never card data beyond brand, last 4 and postal code)',
    basis: 'legal_obligation',
    retention: 'billing_7_years',
    // Its top-up transaction is made after it, so a kept payment never names an expired one.
    retentionFrom: 'created_at',
    subject: 'workspace',
    recipients: PAYMENT_PROCESSOR,
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      processor: billing(),
      checkoutId: col('identifier', false, {
        purpose: "The processor's checkout session (an auto top-up's: its payment intent), to match its events",
      }),
      amountMicros: billing(),
      currency: billing(),
      status: billing(),
      cardBrand: col('billing', true, { purpose: 'Shown on receipts, as the processor reports it' }),
      cardLast4: col('billing', true, { purpose: 'Shown on receipts, as the processor reports it' }),
      postalCode: col('billing', true, { purpose: 'Tax evidence, as the processor reports it' }),
      transactionId: col('identifier', false),
      createdBy: col('identifier', true, { purpose: 'The member who started the checkout' }),
      createdAt: billing(),
      paidAt: billing(),
    },
  }),
  mapTable(paymentEvents, {
    purpose: "The processor's events already applied, so a redelivered one is applied once",
    basis: 'legal_obligation',
    retention: 'billing_7_years',
    retentionFrom: 'received_at',
    subject: 'none',
    recipients: PAYMENT_PROCESSOR,
    columns: {
      id: col('identifier', false),
      processor: billing(),
      type: billing(),
      workspaceId: col('identifier', false),
      receivedAt: billing(),
    },
  }),
];
