import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMcpServer, startFakeMcpServer } from '../../../test/fakes/mcp-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { McpServerView } from './agents.mcp.schemas.ts';
import { ToolDef } from './agents.tools.schemas.ts';

/**
 * Tenancy of MCP servers: a server belongs to one workspace. Another workspace can neither
 * reach it by id through its own routes nor resolve it by name for its agents' tools.
 */

let app: TestApp;
let fake: FakeMcpServer;
let owner: SignedInClient;
let outsider: SignedInClient;
let ws: string;
let otherWs: string;

type Problem = { code: string };
const servers = (w: string, path = '') => `/api/workspaces/${w}/mcp-servers${path}`;

beforeAll(async () => {
  fake = await startFakeMcpServer();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  outsider = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'MCP owner' })).body.id;
  otherWs = (await outsider.post<{ id: string }>('/api/workspaces', { name: 'Elsewhere' })).body.id;
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('security', () => {
  it("another workspace's MCP server answers 404 by id and mcp_server_not_found by name", async () => {
    const created = await owner.post<McpServerView>(servers(ws), { name: 'private-mcp', url: fake.url });
    expect(created.status, created.text).toBe(201);
    const id = created.body.id;

    // Through the outsider's own workspace: the id is not theirs.
    for (const res of [
      await outsider.get<Problem>(servers(otherWs, `/${id}`)),
      await outsider.get<Problem>(servers(otherWs, `/${id}/tools`)),
      await outsider.patch<Problem>(servers(otherWs, `/${id}`), { enabled: false }),
      await outsider.delete<Problem>(servers(otherWs, `/${id}`)),
    ]) {
      expect([res.status, res.body.code]).toEqual([404, 'not_found']);
    }
    const theirList = await outsider.get<{ data: McpServerView[] }>(servers(otherWs));
    expect(theirList.body.data).toEqual([]);

    // An agent of the other workspace naming the server resolves nothing.
    await expect(
      app.modules.agents.tools.tools.resolve(otherWs, [ToolDef.parse({ type: 'mcp', server: 'private-mcp' })]),
    ).rejects.toMatchObject({ code: 'mcp_server_not_found', status: 404 });

    // The owner's server is untouched by the refused calls.
    const after = await owner.get<McpServerView>(servers(ws, `/${id}`));
    expect(after.body).toMatchObject({ name: 'private-mcp', enabled: true });
    const resolved = await app.modules.agents.tools.tools.resolve(ws, [
      ToolDef.parse({ type: 'mcp', server: 'private-mcp', allow: ['echo'] }),
    ]);
    expect(resolved.map((t) => t.name)).toEqual(['private-mcp__echo']);
  });
});
