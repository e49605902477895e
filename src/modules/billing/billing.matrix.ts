import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';

type Ctx = MatrixContext<unknown>;

/**
 * Test-only: the role matrix of billing's workspace routes (run by
 * billing.matrix.routes.test.ts, read by the coverage test). Owners and admins see the
 * balance and the ledger; members and viewers do not. Nothing in src imports it.
 */

const billing = (c: Ctx) => `/api/workspaces/${c.workspaceId}/billing`;
const managers = ['owner', 'admin'] as const;
const owners = ['owner'] as const;

export const matrixRoutes: MatrixRoute<unknown>[] = [
  { method: 'GET', url: (c) => `${billing(c)}/balance`, allowed: managers },
  { method: 'GET', url: (c) => `${billing(c)}/entries`, allowed: managers },
  // With no payment processor configured, an allowed caller gets 409 payments_not_configured (past every access check).
  {
    method: 'POST',
    url: (c) => `${billing(c)}/checkout`,
    body: () => ({ amountMicros: 5_000_000 }),
    allowed: owners,
    expect: { owner: '409 payments_not_configured' },
  },
];
