import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';

type Ctx = MatrixContext<unknown>;

/**
 * Test-only: the role matrix of the auto top-up routes (run by
 * billing.autotopup.matrix.routes.test.ts, read by the coverage test). Only owners
 * (billing:manage) see or change auto top-up. Nothing in src imports it.
 */

const url = (c: Ctx) => `/api/workspaces/${c.workspaceId}/billing/auto-topup`;
const owners = ['owner'] as const;

export const matrixRoutes: MatrixRoute<unknown>[] = [
  { method: 'GET', url, allowed: owners },
  // Saving it switched off needs no card (and no processor): an allowed caller gets 200.
  {
    method: 'PUT',
    url,
    body: () => ({ enabled: false, thresholdMicros: 5_000_000, amountMicros: 20_000_000, monthlyMaxCount: 3 }),
    allowed: owners,
  },
];
