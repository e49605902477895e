import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { RunsService } from './agents.runs.service.ts';
import type { AgentsService } from './agents.service.ts';

/** What the specs use of the app. */
type RunsApp = {
  modules: {
    agents: {
      service: Pick<AgentsService, 'createAgent' | 'publishAgent'>;
      runs: Pick<RunsService, 'createRun' | 'cancelRun'>;
    };
  };
};
type Ctx = MatrixContext<RunsApp>;

/**
 * Test-only: the role matrix of every agent run route (run by agents.runs.matrix.routes.test.ts,
 * read by the coverage test). Every role reads runs; owners, admins and members start, cancel
 * and decide on them; viewers get 403. The workspace has no provider: a run it starts ends
 * `failed` (still a 200), and queued runs are never picked up (no worker runs in the test).
 */

const runs = (c: Ctx) => `/api/workspaces/${c.workspaceId}/runs`;

/** A published agent of the owner's. */
async function ownersAgent(c: Ctx) {
  const name = `matrix-${randomBytes(5).toString('hex')}`;
  const a = await c.app.modules.agents.service.createAgent({
    scope: c.ownerScope,
    definition: { name, model: 'gpt-4o-mini' },
  });
  await c.app.modules.agents.service.publishAgent({ scope: c.ownerScope, agent: a.id });
  return { agentId: a.id, name };
}

/** A queued background run of the owner's (no worker takes it up here). */
async function queuedRun(c: Ctx) {
  const { agentId, name } = await ownersAgent(c);
  const { run } = await c.app.modules.agents.runs.createRun({
    scope: c.ownerScope,
    input: { agent: name, input: 'hello', stream: false, background: true },
  });
  return { agentId, name, runId: run.id };
}

/** A run that ended (cancelled while queued): its event stream ends at once. */
async function endedRun(c: Ctx) {
  const v = await queuedRun(c);
  await c.app.modules.agents.runs.cancelRun({ scope: c.ownerScope, runId: v.runId });
  return v;
}

const WRITERS = ['owner', 'admin', 'member'] as const;
const READERS = ['owner', 'admin', 'member', 'viewer'] as const;

export const matrixRoutes: MatrixRoute<RunsApp>[] = [
  {
    method: 'POST',
    setup: ownersAgent,
    url: runs,
    body: (c) => ({ agent: c.vars.name, input: 'hello', background: true }),
    allowed: WRITERS,
  },
  { method: 'GET', url: runs, allowed: READERS },
  { method: 'GET', setup: queuedRun, url: (c) => `${runs(c)}/${c.vars.runId}`, allowed: READERS },
  { method: 'GET', setup: queuedRun, url: (c) => `${runs(c)}/${c.vars.runId}/steps`, allowed: READERS },
  { method: 'GET', setup: endedRun, url: (c) => `${runs(c)}/${c.vars.runId}/events`, allowed: READERS },
  {
    method: 'POST',
    setup: queuedRun,
    fresh: true,
    url: (c) => `${runs(c)}/${c.vars.runId}/cancel`,
    allowed: WRITERS,
  },
  // A queued run waits for no approval: allowed callers get 409 run_not_waiting, past every permission check.
  {
    method: 'POST',
    setup: queuedRun,
    url: (c) => `${runs(c)}/${c.vars.runId}/approve`,
    body: () => ({}),
    allowed: WRITERS,
    expect: { owner: '409 run_not_waiting', admin: '409 run_not_waiting', member: '409 run_not_waiting' },
  },
  {
    method: 'POST',
    setup: queuedRun,
    url: (c) => `${runs(c)}/${c.vars.runId}/deny`,
    body: () => ({}),
    allowed: WRITERS,
    expect: { owner: '409 run_not_waiting', admin: '409 run_not_waiting', member: '409 run_not_waiting' },
  },
  {
    method: 'GET',
    setup: ownersAgent,
    url: (c) => `/api/workspaces/${c.workspaceId}/agents/${c.vars.agentId}/usage`,
    allowed: READERS,
  },
];
