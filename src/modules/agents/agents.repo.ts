import { and, desc, eq, isNull, lt, ne, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { AgentDefinition } from './agents.schemas.ts';
import { type AgentRow, type AgentVersionRow, agents, agentVersions } from './agents.tables.ts';

/** A row of the agents list: the agent without its draft, and whether the draft was published as it is. */
export type AgentListRow = Omit<AgentRow, 'draft'> & { description: string; model: string; published: boolean };

const isId = (ref: string) => ref.startsWith('agt_');

/**
 * Every SQL statement on the agents module's definition tables. Each runs on the
 * transaction it is given and names the workspace in every query.
 */
export const agentsRepo = {
  async insertAgent(tx: Database, row: AgentRow): Promise<void> {
    await tx.insert(agents).values(row);
  },

  /**
   * The agent `ref` names: its id (archived or not), or the name of a live agent
   * (case-insensitive). Locked until the transaction ends with `lock`.
   */
  async findAgent(tx: Database, workspaceId: string, ref: string, opts: { lock?: boolean } = {}) {
    const where = isId(ref)
      ? and(eq(agents.workspaceId, workspaceId), eq(agents.id, ref))
      : and(eq(agents.workspaceId, workspaceId), sql`lower(${agents.name}) = lower(${ref})`, isNull(agents.archivedAt));
    const query = tx.select().from(agents).where(where).limit(1);
    const rows = opts.lock ? await query.for('update') : await query;
    return rows[0] ?? null;
  },

  /** Whether a live agent other than `exceptId` has `name` (case-insensitive). */
  async nameTaken(tx: Database, workspaceId: string, name: string, exceptId?: string): Promise<boolean> {
    const rows = await tx
      .select({ id: agents.id })
      .from(agents)
      .where(
        and(
          eq(agents.workspaceId, workspaceId),
          sql`lower(${agents.name}) = lower(${name})`,
          isNull(agents.archivedAt),
          exceptId ? ne(agents.id, exceptId) : undefined,
        ),
      )
      .limit(1);
    return rows.length > 0;
  },

  async updateDraft(
    tx: Database,
    workspaceId: string,
    id: string,
    patch: { name: string; draft: AgentDefinition; updatedAt: Date },
  ): Promise<void> {
    await tx
      .update(agents)
      .set(patch)
      .where(and(eq(agents.workspaceId, workspaceId), eq(agents.id, id)));
  },

  async setLatestVersion(tx: Database, workspaceId: string, id: string, version: number): Promise<void> {
    await tx
      .update(agents)
      .set({ latestVersion: version })
      .where(and(eq(agents.workspaceId, workspaceId), eq(agents.id, id)));
  },

  async archive(tx: Database, workspaceId: string, id: string, at: Date): Promise<void> {
    await tx
      .update(agents)
      .set({ archivedAt: at, updatedAt: at })
      .where(and(eq(agents.workspaceId, workspaceId), eq(agents.id, id)));
  },

  /**
   * A page of the workspace's agents, newest first (ids sort by creation), after `cursor`.
   * `published`: the draft is exactly the latest version (compared as stored text).
   */
  async list(
    tx: Database,
    workspaceId: string,
    page: { cursor?: string; limit: number; archived: boolean },
  ): Promise<AgentListRow[]> {
    return tx
      .select({
        id: agents.id,
        workspaceId: agents.workspaceId,
        name: agents.name,
        latestVersion: agents.latestVersion,
        createdAt: agents.createdAt,
        updatedAt: agents.updatedAt,
        archivedAt: agents.archivedAt,
        description: sql<string>`coalesce(${agents.draft}->>'description', '')`,
        model: sql<string>`coalesce(${agents.draft}->>'model', '')`,
        published: sql<boolean>`coalesce(${agentVersions.definition}::text = ${agents.draft}::text, false)`,
      })
      .from(agents)
      .leftJoin(
        agentVersions,
        and(
          eq(agentVersions.workspaceId, agents.workspaceId),
          eq(agentVersions.agentId, agents.id),
          eq(agentVersions.version, agents.latestVersion),
        ),
      )
      .where(
        and(
          eq(agents.workspaceId, workspaceId),
          page.archived ? undefined : isNull(agents.archivedAt),
          page.cursor ? lt(agents.id, page.cursor) : undefined,
        ),
      )
      .orderBy(desc(agents.id))
      .limit(page.limit);
  },

  async insertVersion(tx: Database, row: AgentVersionRow): Promise<void> {
    await tx.insert(agentVersions).values(row);
  },

  async findVersion(
    tx: Database,
    workspaceId: string,
    agentId: string,
    version: number,
  ): Promise<AgentVersionRow | null> {
    const rows = await tx
      .select()
      .from(agentVersions)
      .where(
        and(
          eq(agentVersions.workspaceId, workspaceId),
          eq(agentVersions.agentId, agentId),
          eq(agentVersions.version, version),
        ),
      )
      .limit(1);
    return rows[0] ?? null;
  },

  /** A page of an agent's versions, newest first, below version `before`. */
  async listVersions(
    tx: Database,
    workspaceId: string,
    agentId: string,
    page: { before?: number; limit: number },
  ): Promise<Omit<AgentVersionRow, 'definition'>[]> {
    return tx
      .select({
        id: agentVersions.id,
        agentId: agentVersions.agentId,
        workspaceId: agentVersions.workspaceId,
        version: agentVersions.version,
        createdBy: agentVersions.createdBy,
        createdAt: agentVersions.createdAt,
      })
      .from(agentVersions)
      .where(
        and(
          eq(agentVersions.workspaceId, workspaceId),
          eq(agentVersions.agentId, agentId),
          page.before ? lt(agentVersions.version, page.before) : undefined,
        ),
      )
      .orderBy(desc(agentVersions.version))
      .limit(page.limit);
  },
};
