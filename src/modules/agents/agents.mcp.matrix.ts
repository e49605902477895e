import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { McpService } from './agents.mcp.service.ts';

/** What the specs use of the app. */
type McpApp = { modules: { agents: { tools: { mcp: Pick<McpService, 'addServer'> } } } };
type Ctx = MatrixContext<McpApp>;

/**
 * Test-only: the role matrix of the MCP server routes (run by agents.mcp.matrix.routes.test.ts,
 * read by the coverage test). Everyone who sees agents lists servers; owners, admins and
 * members (who build agents) ask a server for its tools; owners and admins manage servers.
 * Nothing in src imports it.
 */

const servers = (c: Ctx) => `/api/workspaces/${c.workspaceId}/mcp-servers`;
const uniqueName = () => `mcp-${randomBytes(4).toString('hex')}`;
const MANAGERS = ['owner', 'admin'] as const;
const BUILDERS = ['owner', 'admin', 'member'] as const;
const READERS = ['owner', 'admin', 'member', 'viewer'] as const;

/** A fresh server of the owner's; disabled ones are never contacted. */
const ownersServer =
  (enabled = true) =>
  async (c: Ctx) => {
    const s = await c.app.modules.agents.tools.mcp.addServer({
      scope: c.ownerScope,
      input: { name: uniqueName(), url: 'https://mcp.example.com/mcp', enabled },
    });
    return { serverId: s.id };
  };

export const matrixRoutes: MatrixRoute<McpApp>[] = [
  {
    method: 'POST',
    url: servers,
    body: () => ({ name: uniqueName(), url: 'https://mcp.example.com/mcp', headers: { 'X-Team': 'a' } }),
    allowed: MANAGERS,
  },
  { method: 'GET', url: servers, allowed: READERS },
  { method: 'GET', setup: ownersServer(), url: (c) => `${servers(c)}/${c.vars.serverId}`, allowed: READERS },
  {
    method: 'PATCH',
    setup: ownersServer(),
    url: (c) => `${servers(c)}/${c.vars.serverId}`,
    body: () => ({ enabled: false }),
    allowed: MANAGERS,
  },
  { method: 'DELETE', setup: ownersServer(), url: (c) => `${servers(c)}/${c.vars.serverId}`, allowed: MANAGERS },
  {
    method: 'GET',
    setup: ownersServer(false),
    url: (c) => `${servers(c)}/${c.vars.serverId}/tools`,
    allowed: BUILDERS,
    expect: { owner: '409 mcp_server_disabled', admin: '409 mcp_server_disabled', member: '409 mcp_server_disabled' },
  },
];
