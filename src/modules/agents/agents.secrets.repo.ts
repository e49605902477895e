import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type AgentSecretRow, agentSecrets } from './agents.secrets.tables.ts';

/** Every SQL statement on `agent_secrets`. Each names its workspace. */
export const secretsRepo = {
  async findByName(tx: Database, workspaceId: string, name: string): Promise<AgentSecretRow | undefined> {
    const [row] = await tx
      .select()
      .from(agentSecrets)
      .where(and(eq(agentSecrets.workspaceId, workspaceId), eq(agentSecrets.name, name)))
      .for('update');
    return row;
  },

  async findByNames(tx: Database, workspaceId: string, names: string[]): Promise<AgentSecretRow[]> {
    if (names.length === 0) return [];
    return tx
      .select()
      .from(agentSecrets)
      .where(and(eq(agentSecrets.workspaceId, workspaceId), inArray(agentSecrets.name, names)));
  },

  async list(tx: Database, workspaceId: string): Promise<AgentSecretRow[]> {
    return tx
      .select()
      .from(agentSecrets)
      .where(eq(agentSecrets.workspaceId, workspaceId))
      .orderBy(asc(agentSecrets.name));
  },

  async insert(tx: Database, row: AgentSecretRow): Promise<void> {
    await tx.insert(agentSecrets).values(row);
  },

  async replace(
    tx: Database,
    workspaceId: string,
    id: string,
    set: Pick<AgentSecretRow, 'valueCiphertext' | 'allowedHosts' | 'allowedHeaders' | 'updatedAt'>,
  ): Promise<void> {
    await tx
      .update(agentSecrets)
      .set(set)
      .where(and(eq(agentSecrets.workspaceId, workspaceId), eq(agentSecrets.id, id)));
  },

  async delete(tx: Database, workspaceId: string, name: string): Promise<{ id: string } | undefined> {
    const [row] = await tx
      .delete(agentSecrets)
      .where(and(eq(agentSecrets.workspaceId, workspaceId), eq(agentSecrets.name, name)))
      .returning({ id: agentSecrets.id });
    return row;
  },
};

export type SecretsRepo = typeof secretsRepo;
