import { z } from 'zod';
import { MAX_AMOUNT_MICROS } from './billing.ledger.ts';

/** Request and response shapes of the auto top-up routes. Money is integer micro-units (1 USD = 1,000,000). */

const Micros = z.number().int().min(1).max(MAX_AMOUNT_MICROS);

export const AutoTopupBody = z
  .strictObject({
    enabled: z.boolean().describe('Opt in (needs a card saved by a checkout with autoTopup: true)'),
    thresholdMicros: Micros.describe('Charge the card when the available credits fall below this'),
    amountMicros: z
      .number()
      .int()
      .min(1_000_000)
      .max(10_000_000_000)
      .describe('What each auto top-up buys, in micro-units (whole cents, 1 to 10,000 USD)'),
    monthlyMaxCount: z.number().int().min(1).max(1000).nullable().optional().describe('At most this many per month'),
    monthlyMaxMicros: Micros.nullable().optional().describe('At most this much in total per month'),
  })
  .refine((b) => (b.monthlyMaxCount ?? null) !== null || (b.monthlyMaxMicros ?? null) !== null, {
    message: 'set monthlyMaxCount, monthlyMaxMicros or both',
    path: ['monthlyMaxCount'],
  });

export const AutoTopupView = z.object({
  workspaceId: z.string(),
  enabled: z.boolean(),
  thresholdMicros: z.number().int().nullable(),
  amountMicros: z.number().int().nullable(),
  monthlyMaxCount: z.number().int().nullable(),
  monthlyMaxMicros: z.number().int().nullable(),
  paymentMethod: z
    .object({ brand: z.string(), last4: z.string() })
    .nullable()
    .describe('The saved card, as the processor reports it (null: none saved)'),
  consecutiveFailures: z.number().int().describe('Declines in a row; the third turns auto top-up off'),
  disabledReason: z.string().nullable().describe('card_declined when Berth turned it off'),
  thisMonth: z.object({ count: z.number().int(), amountMicros: z.number().int() }),
  inFlight: z.boolean().describe('A charge is waiting for the processor'),
});
