import { and, asc, eq } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { agentMcpServers, type McpServerRow } from './agents.mcp.tables.ts';

/** Every SQL statement on `agent_mcp_servers`. Each names its workspace. */
export const mcpRepo = {
  async findById(tx: Database, workspaceId: string, id: string): Promise<McpServerRow | undefined> {
    const [row] = await tx
      .select()
      .from(agentMcpServers)
      .where(and(eq(agentMcpServers.workspaceId, workspaceId), eq(agentMcpServers.id, id)));
    return row;
  },

  async findByName(tx: Database, workspaceId: string, name: string): Promise<McpServerRow | undefined> {
    const [row] = await tx
      .select()
      .from(agentMcpServers)
      .where(and(eq(agentMcpServers.workspaceId, workspaceId), eq(agentMcpServers.name, name)));
    return row;
  },

  async list(tx: Database, workspaceId: string): Promise<McpServerRow[]> {
    return tx
      .select()
      .from(agentMcpServers)
      .where(eq(agentMcpServers.workspaceId, workspaceId))
      .orderBy(asc(agentMcpServers.name));
  },

  async insert(tx: Database, row: McpServerRow): Promise<void> {
    await tx.insert(agentMcpServers).values(row);
  },

  async update(
    tx: Database,
    workspaceId: string,
    id: string,
    set: Partial<Pick<McpServerRow, 'url' | 'headerNames' | 'headersCiphertext' | 'enabled' | 'updatedAt'>>,
  ): Promise<void> {
    await tx
      .update(agentMcpServers)
      .set(set)
      .where(and(eq(agentMcpServers.workspaceId, workspaceId), eq(agentMcpServers.id, id)));
  },

  async delete(tx: Database, workspaceId: string, id: string): Promise<boolean> {
    const rows = await tx
      .delete(agentMcpServers)
      .where(and(eq(agentMcpServers.workspaceId, workspaceId), eq(agentMcpServers.id, id)))
      .returning({ id: agentMcpServers.id });
    return rows.length > 0;
  },
};

export type McpRepo = typeof mcpRepo;
