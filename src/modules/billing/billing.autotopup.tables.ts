import { bigint, boolean, integer, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';
import { PAYMENT_PROCESSOR } from './billing.tables.ts';

// Auto top-up (see migrations/0019_payments_autotopup_promotions.sql): a workspace's opt-in
// settings with the card saved at the processor, and each off-session charge.

export const autoTopupSettings = pgTable('auto_topup_settings', {
  workspaceId: text('workspace_id').primaryKey(),
  enabled: boolean('enabled').notNull(),
  thresholdMicros: bigint('threshold_micros', { mode: 'number' }),
  amountMicros: bigint('amount_micros', { mode: 'number' }),
  monthlyMaxCount: integer('monthly_max_count'),
  monthlyMaxMicros: bigint('monthly_max_micros', { mode: 'number' }),
  processorCustomerId: text('processor_customer_id'),
  processorPaymentMethodId: text('processor_payment_method_id'),
  cardBrand: text('card_brand'),
  cardLast4: text('card_last4'),
  consecutiveFailures: integer('consecutive_failures').notNull().default(0),
  disabledReason: text('disabled_reason'),
  nextAttemptAt: ts('next_attempt_at'),
  updatedBy: text('updated_by'),
  updatedAt: ts('updated_at').notNull(),
});

export const AUTO_TOPUP_STATUSES = ['pending', 'succeeded', 'failed'] as const;
export type AutoTopupStatus = (typeof AUTO_TOPUP_STATUSES)[number];

export const autoTopups = pgTable('auto_topups', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  paymentIntentId: text('payment_intent_id').unique(),
  processorCustomerId: text('processor_customer_id').notNull(),
  processorPaymentMethodId: text('processor_payment_method_id').notNull(),
  amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
  currency: text('currency', { enum: ['usd'] }).notNull(),
  status: text('status', { enum: AUTO_TOPUP_STATUSES }).notNull(),
  failureCode: text('failure_code'),
  transactionId: text('transaction_id'),
  createdAt: ts('created_at').notNull(),
  resolvedAt: ts('resolved_at'),
});

export type AutoTopupSettingsRow = typeof autoTopupSettings.$inferSelect;
export type AutoTopupRow = typeof autoTopups.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const autoTopupTables = [
  mapTable(autoTopupSettings, {
    purpose: "A workspace's opt-in to charging its saved card when its credits run low",
    basis: 'contract',
    // Current settings: kept while the workspace has them.
    retention: 'billing_7_years',
    subject: 'workspace',
    recipients: PAYMENT_PROCESSOR,
    columns: {
      workspaceId: col('identifier', false),
      enabled: billing(),
      thresholdMicros: billing(),
      amountMicros: billing(),
      monthlyMaxCount: billing('A monthly cap on the number of charges'),
      monthlyMaxMicros: billing('A monthly cap on the total charged'),
      // References that let the processor charge the card: not handed out in exports.
      processorCustomerId: col('identifier', true, {
        purpose: "The processor's customer holding the saved card (no card data)",
        export: 'never',
      }),
      processorPaymentMethodId: col('identifier', true, {
        purpose: "The processor's reference to the saved card, to charge it off-session (no card data)",
        export: 'never',
      }),
      cardBrand: col('billing', true, { purpose: 'Shows which card is charged, as the processor reports it' }),
      cardLast4: col('billing', true, { purpose: 'Shows which card is charged, as the processor reports it' }),
      consecutiveFailures: billing('Turns auto top-up off after three declines in a row'),
      disabledReason: billing(),
      nextAttemptAt: billing('After a decline, when the next charge may be tried'),
      updatedBy: col('identifier', true, { purpose: 'The member who last changed the settings' }),
      updatedAt: billing(),
    },
  }),
  mapTable(autoTopups, {
    purpose: "Off-session charges of a workspace's saved card (auto top-up)",
    basis: 'legal_obligation',
    retention: 'billing_7_years',
    // Its top-up transaction is made after it, so a kept charge never names an expired one.
    retentionFrom: 'created_at',
    subject: 'workspace',
    recipients: PAYMENT_PROCESSOR,
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      paymentIntentId: col('identifier', false, { purpose: "The processor's payment, to match its events" }),
      processorCustomerId: col('identifier', true, {
        purpose: "The processor's customer charged (no card data)",
        export: 'never',
      }),
      processorPaymentMethodId: col('identifier', true, {
        purpose: "The processor's reference to the card charged (no card data)",
        export: 'never',
      }),
      amountMicros: billing(),
      currency: billing(),
      status: billing(),
      failureCode: billing("The processor's reason for a decline"),
      transactionId: col('identifier', false),
      createdAt: billing(),
      resolvedAt: billing(),
    },
  }),
];
