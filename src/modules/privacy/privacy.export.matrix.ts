import type { MatrixRoute } from '../../platform/http/matrix.ts';

/**
 * Test-only: the role matrix of workspace exports (run by
 * privacy.export.matrix.routes.test.ts, read by the coverage test). A workspace's data is
 * exported to its owners only (`privacy:manage`). Nothing in src imports it.
 */
export const matrixRoutes: MatrixRoute[] = [
  {
    method: 'POST',
    url: (c) => `/api/workspaces/${c.workspaceId}/privacy/exports`,
    allowed: ['owner'],
  },
];
