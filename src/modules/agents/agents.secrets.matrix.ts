import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { SecretsService } from './agents.secrets.service.ts';

/** What the specs use of the app. */
type SecretsApp = { modules: { agents: { tools: { secrets: Pick<SecretsService, 'setSecret'> } } } };
type Ctx = MatrixContext<SecretsApp>;

/**
 * Test-only: the role matrix of the workspace secrets routes (run by
 * agents.secrets.matrix.routes.test.ts, read by the coverage test). Only owners and admins
 * see or change secrets. Nothing in src imports it.
 */

const secrets = (c: Ctx) => `/api/workspaces/${c.workspaceId}/secrets`;
const uniqueName = () => `MATRIX_${randomBytes(4).toString('hex').toUpperCase()}`;
const MANAGERS = ['owner', 'admin'] as const;

const ownersSecret = async (c: Ctx) => {
  const name = uniqueName();
  await c.app.modules.agents.tools.secrets.setSecret({
    scope: c.ownerScope,
    name,
    input: { value: 'matrix-value', allowedHosts: ['api.example.com'] },
  });
  return { name };
};

export const matrixRoutes: MatrixRoute<SecretsApp>[] = [
  {
    method: 'PUT',
    setup: async () => ({ name: uniqueName() }),
    url: (c) => `${secrets(c)}/${c.vars.name}`,
    body: () => ({ value: 'v', allowedHosts: ['api.example.com'] }),
    allowed: MANAGERS,
  },
  { method: 'GET', url: secrets, allowed: MANAGERS },
  { method: 'DELETE', setup: ownersSecret, url: (c) => `${secrets(c)}/${c.vars.name}`, allowed: MANAGERS },
];
