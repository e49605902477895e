import type { Db } from '../../platform/db/db.ts';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import { newId } from '../../platform/ids.ts';
import { billingRepo } from './billing.repo.ts';

/**
 * Test-only: the role matrix of statements, the usage-cost breakdown, payments and receipts
 * (run by billing.statements.matrix.routes.test.ts, read by the coverage test). All are
 * `billing:read`: owners and admins. Nothing in src imports it.
 */

type StatementsApp = { db: Pick<Db, 'tenant'> };
type Ctx = MatrixContext<StatementsApp>;

const billing = (c: Ctx) => `/api/workspaces/${c.workspaceId}/billing`;
const managers = ['owner', 'admin'] as const;
/** The current month (the test app's clock starts at the real time). */
const thisMonth = async () => ({ period: new Date().toISOString().slice(0, 7) });

/** A paid payment of workspace A (as a processor's event would leave it), for its receipt. */
async function paidPayment(c: Ctx): Promise<Record<string, string>> {
  const now = new Date();
  const id = newId('pay', now);
  await c.app.db.tenant(c.workspaceId, (tx) =>
    billingRepo.insertPayment(tx, {
      id,
      workspaceId: c.workspaceId,
      processor: 'stripe',
      checkoutId: `cs_test_${id}`,
      amountMicros: 5_000_000,
      currency: 'usd',
      status: 'paid',
      cardBrand: 'visa',
      cardLast4: '4242',
      postalCode: null,
      transactionId: null,
      createdBy: null,
      createdAt: now,
      paidAt: now,
    } as Parameters<typeof billingRepo.insertPayment>[1]),
  );
  return { paymentId: id };
}

export const matrixRoutes: MatrixRoute<StatementsApp>[] = [
  { method: 'GET', url: (c) => `${billing(c)}/invoices`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/invoices/${c.vars.period}`, setup: thisMonth, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/invoices/${c.vars.period}/html`, setup: thisMonth, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/invoices/${c.vars.period}/pdf`, setup: thisMonth, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/usage`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/payments`, allowed: managers },
  {
    method: 'GET',
    url: (c) => `${billing(c)}/payments/${c.vars.paymentId}/receipt`,
    setup: paidPayment,
    allowed: managers,
  },
  {
    method: 'GET',
    url: (c) => `${billing(c)}/payments/${c.vars.paymentId}/receipt/html`,
    setup: paidPayment,
    allowed: managers,
  },
];
