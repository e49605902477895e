import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';

/**
 * Test-only: the role matrix of every audit route of a workspace (run by
 * audit.matrix.routes.test.ts, read by the matrix coverage test). Nothing in src imports it.
 */
const audit = (c: MatrixContext) => `/api/workspaces/${c.workspaceId}/audit`;
const MANAGERS = ['owner', 'admin'] as const;

export const matrixRoutes: MatrixRoute[] = [
  { method: 'GET', url: audit, allowed: MANAGERS },
  { method: 'GET', url: (c) => `${audit(c)}/export`, allowed: MANAGERS },
  { method: 'GET', url: (c) => `${audit(c)}/verify`, allowed: MANAGERS },
  // Fresh: a chain takes one checkpoint per head move and minute, so each caller needs its own.
  { method: 'POST', url: (c) => `${audit(c)}/checkpoints`, allowed: MANAGERS, fresh: true },
];
