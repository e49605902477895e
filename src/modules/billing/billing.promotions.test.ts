import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LedgerMove } from './billing.promotions.repo.ts';
import { type Lot, promotionRemainders } from './billing.promotions.ts';

/**
 * The promotions replay on generated ledgers: whatever the order of grants, spending,
 * refunds and expiries, each promotion's remainder stays between zero and its amount, the
 * remainders never exceed the workspace's total, and spending never skips a promotion that
 * expires sooner.
 */

const DAY = 86_400_000;
const T0 = Date.UTC(2027, 0, 1);

type Step =
  | { kind: 'grant'; amount: number; promo: boolean; expiresInDays: number }
  | { kind: 'spend'; amount: number }
  | { kind: 'refund'; amount: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('grant' as const),
    amount: fc.integer({ min: 1, max: 5_000_000 }),
    promo: fc.boolean(),
    expiresInDays: fc.integer({ min: 1, max: 30 }),
  }),
  fc.record({ kind: fc.constant('spend' as const), amount: fc.integer({ min: 1, max: 5_000_000 }) }),
  fc.record({ kind: fc.constant('refund' as const), amount: fc.integer({ min: 1, max: 5_000_000 }) }),
);

/** Builds a ledger from the steps, one a day, never below zero (as the ledger refuses). */
function ledgerOf(steps: Step[]) {
  const lots: Lot[] = [];
  const moves: LedgerMove[] = [];
  let total = 0;
  steps.forEach((s, i) => {
    const createdAt = new Date(T0 + i * DAY);
    const id = `ltx_${String(i).padStart(4, '0')}`;
    if (s.kind === 'grant') {
      total += s.amount;
      moves.push({ id, kind: 'grant', idempotencyKey: `g${i}`, createdAt, deltaMicros: BigInt(s.amount) });
      if (s.promo)
        lots.push({
          grantTransactionId: id,
          amountMicros: s.amount,
          expiresAt: new Date(T0 + (i + s.expiresInDays) * DAY),
        });
      return;
    }
    const amount = Math.min(s.amount, total);
    if (amount === 0) return;
    total -= amount;
    moves.push({
      id,
      kind: s.kind === 'spend' ? 'settle' : 'refund',
      idempotencyKey: `m${i}`,
      createdAt,
      deltaMicros: -BigInt(amount),
    });
  });
  return { lots, moves, total: BigInt(total) };
}

describe('happy', () => {
  it('keeps every remainder within its promotion and the total, exactly', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
        const { lots, moves, total } = ledgerOf(steps);
        const states = promotionRemainders(lots, moves, 0n);
        let sum = 0n;
        for (const lot of lots) {
          const left = states.get(lot.grantTransactionId)?.remainingMicros ?? -1n;
          expect(left >= 0n && left <= BigInt(lot.amountMicros)).toBe(true);
          sum += left;
        }
        expect(sum <= total).toBe(true);
      }),
    );
  });

  it('spends a promotion expiring later only once those expiring sooner are used up', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.integer({ min: 1, max: 2_000_000 }),
        (a, b, spent) => {
          const lots: Lot[] = [
            { grantTransactionId: 'ltx_a', amountMicros: a, expiresAt: new Date(T0 + 20 * DAY) },
            { grantTransactionId: 'ltx_b', amountMicros: b, expiresAt: new Date(T0 + 10 * DAY) },
          ];
          const s = Math.min(spent, a + b);
          const moves: LedgerMove[] = [
            { id: 'ltx_a', kind: 'grant', idempotencyKey: 'a', createdAt: new Date(T0), deltaMicros: BigInt(a) },
            { id: 'ltx_b', kind: 'grant', idempotencyKey: 'b', createdAt: new Date(T0 + 1), deltaMicros: BigInt(b) },
            {
              id: 'ltx_s',
              kind: 'settle',
              idempotencyKey: 's',
              createdAt: new Date(T0 + DAY),
              deltaMicros: -BigInt(s),
            },
          ];
          const states = promotionRemainders(lots, moves, 0n);
          expect(states.get('ltx_b')?.remainingMicros).toBe(BigInt(Math.max(0, b - s)));
          expect(states.get('ltx_a')?.remainingMicros).toBe(BigInt(a - Math.max(0, s - b)));
        },
      ),
    );
  });
});
