import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { WorkspacesService } from './index.ts';

/** What the specs use of the app. */
type WorkspacesApp = { modules: { workspaces: { service: Pick<WorkspacesService, 'invite'> } } };
type Ctx = MatrixContext<WorkspacesApp>;

/**
 * Test-only: the role matrix of every workspaces route (run by workspaces.matrix.routes.test.ts,
 * read by the coverage test). Nothing in src imports it.
 */

const ws = (c: Ctx) => `/api/workspaces/${c.workspaceId}`;

const invite = async (c: Ctx) => {
  const { invitation } = await c.app.modules.workspaces.service.invite({
    scope: c.ownerScope,
    email: `invitee-${randomBytes(4).toString('hex')}@matrix.test`,
    role: 'member',
  });
  return { invitationId: invitation.id };
};

export const matrixRoutes: MatrixRoute<WorkspacesApp>[] = [
  { method: 'GET', url: ws, allowed: ['owner', 'admin', 'member', 'viewer'] },
  { method: 'PATCH', url: ws, body: () => ({ name: 'Renamed' }), allowed: ['owner', 'admin'] },
  {
    method: 'PUT',
    url: (c) => `${ws(c)}/security`,
    body: () => ({ requireMfa: false }),
    allowed: ['owner'],
  },
  { method: 'GET', url: (c) => `${ws(c)}/members`, allowed: ['owner', 'admin', 'member', 'viewer'] },
  {
    method: 'PATCH',
    setup: async (c) => ({ userId: (await c.addMember('member')).userId }),
    url: (c) => `${ws(c)}/members/${c.vars.userId}`,
    body: () => ({ role: 'viewer' }),
    allowed: ['owner', 'admin'],
  },
  {
    method: 'DELETE',
    setup: async (c) => ({ userId: (await c.addMember('viewer')).userId }),
    url: (c) => `${ws(c)}/members/${c.vars.userId}`,
    allowed: ['owner', 'admin'],
  },
  {
    method: 'POST',
    url: (c) => `${ws(c)}/invitations`,
    body: () => ({ email: `new-${randomBytes(4).toString('hex')}@matrix.test`, role: 'member' }),
    allowed: ['owner', 'admin'],
  },
  { method: 'GET', url: (c) => `${ws(c)}/invitations`, allowed: ['owner', 'admin'] },
  {
    method: 'DELETE',
    setup: invite,
    url: (c) => `${ws(c)}/invitations/${c.vars.invitationId}`,
    allowed: ['owner', 'admin'],
  },
  {
    method: 'POST',
    url: (c) => `${ws(c)}/transfer-ownership`,
    body: (c) => ({ userId: c.users.admin.userId }),
    allowed: ['owner'],
    fresh: true,
  },
  {
    method: 'POST',
    url: (c) => `${ws(c)}/leave`,
    allowed: ['owner', 'admin', 'member', 'viewer'],
    // The only owner cannot leave; everyone else can.
    expect: { owner: '403 last_owner' },
    fresh: true,
  },
  {
    method: 'DELETE',
    url: ws,
    body: () => ({ confirmName: 'Matrix A' }),
    allowed: ['owner'],
    fresh: true,
  },
];
