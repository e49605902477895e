import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { AgentsService } from './agents.service.ts';

/** What the specs use of the app. */
type AgentsApp = { modules: { agents: { service: Pick<AgentsService, 'createAgent' | 'publishAgent'> } } };
type Ctx = MatrixContext<AgentsApp>;

/**
 * Test-only: the role matrix of every agent definition route (run by
 * agents.matrix.routes.test.ts, read by the coverage test). Every role reads agents;
 * owners, admins and members change them; viewers get 403. Nothing in src imports it.
 */

const agents = (c: Ctx) => `/api/workspaces/${c.workspaceId}/agents`;
const uniqueName = () => `matrix-${randomBytes(5).toString('hex')}`;

/** A fresh agent of the owner's for each caller, published as version 1 with `published`. */
const ownersAgent =
  (published = false) =>
  async (c: Ctx) => {
    const name = uniqueName();
    const a = await c.app.modules.agents.service.createAgent({
      scope: c.ownerScope,
      definition: { name, model: 'gpt-4o-mini' },
    });
    if (published) await c.app.modules.agents.service.publishAgent({ scope: c.ownerScope, agent: a.id });
    return { agentId: a.id, name, version: '1' };
  };

const WRITERS = ['owner', 'admin', 'member'] as const;
const READERS = ['owner', 'admin', 'member', 'viewer'] as const;

export const matrixRoutes: MatrixRoute<AgentsApp>[] = [
  { method: 'POST', url: agents, body: () => ({ name: uniqueName(), model: 'gpt-4o-mini' }), allowed: WRITERS },
  {
    method: 'POST',
    url: (c) => `${agents(c)}/import`,
    body: () => ({ format: 'berth.agent/v1', name: uniqueName(), model: 'gpt-4o-mini' }),
    allowed: WRITERS,
  },
  { method: 'GET', url: agents, allowed: READERS },
  { method: 'GET', setup: ownersAgent(), url: (c) => `${agents(c)}/${c.vars.agentId}`, allowed: READERS },
  {
    method: 'PUT',
    setup: ownersAgent(),
    url: (c) => `${agents(c)}/${c.vars.agentId}`,
    body: (c) => ({ name: c.vars.name, model: 'gpt-4o', instructions: 'Edited.' }),
    allowed: WRITERS,
  },
  { method: 'DELETE', setup: ownersAgent(), url: (c) => `${agents(c)}/${c.vars.agentId}`, allowed: WRITERS },
  { method: 'POST', setup: ownersAgent(), url: (c) => `${agents(c)}/${c.vars.agentId}/publish`, allowed: WRITERS },
  {
    method: 'GET',
    setup: ownersAgent(true),
    url: (c) => `${agents(c)}/${c.vars.agentId}/versions`,
    allowed: READERS,
  },
  {
    method: 'GET',
    setup: ownersAgent(true),
    url: (c) => `${agents(c)}/${c.vars.agentId}/versions/${c.vars.version}`,
    allowed: READERS,
  },
  {
    method: 'GET',
    setup: ownersAgent(true),
    url: (c) => `${agents(c)}/${c.vars.agentId}/export`,
    allowed: READERS,
  },
];
