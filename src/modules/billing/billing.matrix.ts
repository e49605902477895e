import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { BudgetsService } from './billing.budgets.ts';

/** What the specs use of the app. */
type BillingApp = { modules: { billing: { budgets: Pick<BudgetsService, 'setBudget'> } } };
type Ctx = MatrixContext<BillingApp>;

/** A daily budget of the workspace, (re)made for each caller. */
const budget = async (c: Ctx) => {
  const b = await c.app.modules.billing.budgets.setBudget({
    scope: c.ownerScope,
    keyId: null,
    period: 'day',
    limitMicros: 1_000_000,
  });
  return { budgetId: b.id };
};

/**
 * Test-only: the role matrix of billing's workspace routes (run by
 * billing.matrix.routes.test.ts, read by the coverage test). Owners and admins see the
 * balance and the ledger; members and viewers do not. Nothing in src imports it.
 */

const billing = (c: Ctx) => `/api/workspaces/${c.workspaceId}/billing`;
const managers = ['owner', 'admin'] as const;
const owners = ['owner'] as const;

export const matrixRoutes: MatrixRoute<BillingApp>[] = [
  { method: 'GET', url: (c) => `${billing(c)}/balance`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/entries`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/standing`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/budgets`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/plan`, allowed: managers },
  {
    method: 'PUT',
    url: (c) => `${billing(c)}/budgets`,
    body: () => ({ period: 'month', limitMicros: 5_000_000 }),
    allowed: managers,
  },
  { method: 'DELETE', setup: budget, url: (c) => `${billing(c)}/budgets/${c.vars.budgetId}`, allowed: managers },
  // With no payment processor configured, an allowed caller gets 409 payments_not_configured (past every access check).
  {
    method: 'POST',
    url: (c) => `${billing(c)}/checkout`,
    body: () => ({ amountMicros: 5_000_000 }),
    allowed: owners,
    expect: { owner: '409 payments_not_configured' },
  },
];
