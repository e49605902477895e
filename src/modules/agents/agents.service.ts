import type { Clock } from '../../platform/clock.ts';
import { type Database, type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { AuditService } from '../audit/index.ts';
import { checkDefinition, definitionText } from './agents.definition.ts';
import type { agentsRepo } from './agents.repo.ts';
import type {
  AgentDefinition,
  AgentDefinitionInput,
  AgentSummary,
  AgentView,
  VersionSummary,
  VersionView,
} from './agents.schemas.ts';
import type { AgentRow, AgentVersionRow } from './agents.tables.ts';

type Deps = {
  db: Pick<Db, 'tenant'>;
  repo: typeof agentsRepo;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  /** Checks of the definition's use of workspace secrets that read them (placement, scheme); throws AppError. */
  checkSecretUse?: (workspaceId: string, tools: AgentDefinition['tools']) => Promise<void>;
};

/** The user an actor acts for (a key acts for its creator); none for system actors. */
function userOf(actor: Actor): string | null {
  return actor.type === 'system' ? null : actor.userId;
}

function versionSummary(v: Omit<AgentVersionRow, 'definition'>): VersionSummary {
  return {
    id: v.id,
    agentId: v.agentId,
    version: v.version,
    createdBy: v.createdBy,
    createdAt: v.createdAt.toISOString(),
  };
}

function versionView(v: AgentVersionRow): VersionView {
  return { ...versionSummary(v), definition: v.definition };
}

function agentView(a: AgentRow, latest: AgentVersionRow | null): AgentView {
  return {
    id: a.id,
    workspaceId: a.workspaceId,
    name: a.name,
    draft: a.draft,
    latestVersion: latest ? versionView(latest) : null,
    unpublishedChanges: !latest || definitionText(latest.definition) !== definitionText(a.draft),
    createdAt: a.createdAt.toISOString(),
    updatedAt: a.updatedAt.toISOString(),
    archivedAt: a.archivedAt?.toISOString() ?? null,
  };
}

const nameTaken = (name: string) =>
  new AppError('agent_name_taken', `An agent named ${name} exists in this workspace: choose another name.`);

const archived = (a: AgentRow) =>
  new AppError('agent_archived', `The agent ${a.name} was archived: it can be read and exported, not changed.`);

/**
 * Agent definitions: create (or import) from a `berth.agent/v1` definition, edit the draft,
 * publish immutable versions from it, read, export, archive. Every change writes one audit
 * event in its transaction; definitions (instructions, tool templates) are customer content
 * and appear in no audit diff and no log.
 */
export function agentsService(deps: Deps) {
  const { db, repo, clock } = deps;

  /** Turns the unique-name index's refusal (a concurrent create or rename) into its 409. */
  async function guardName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isUniqueViolation(err)) throw nameTaken(name);
      throw err;
    }
  }

  async function mustFind(tx: Database, workspaceId: string, ref: string, lock = false): Promise<AgentRow> {
    const a = await repo.findAgent(tx, workspaceId, ref, { lock });
    if (!a) throw notFound('agent');
    return a;
  }

  async function latestOf(tx: Database, a: AgentRow): Promise<AgentVersionRow | null> {
    return a.latestVersion > 0 ? repo.findVersion(tx, a.workspaceId, a.id, a.latestVersion) : null;
  }

  async function insertVersion(tx: Database, scope: Scope, a: AgentRow, def: AgentDefinition) {
    const now = clock.now();
    const row: AgentVersionRow = {
      id: newId('agv', now),
      agentId: a.id,
      workspaceId: a.workspaceId,
      version: a.latestVersion + 1,
      definition: def,
      createdBy: userOf(scope.actor),
      createdAt: now,
    };
    await repo.insertVersion(tx, row);
    await repo.setLatestVersion(tx, a.workspaceId, a.id, row.version);
    return row;
  }

  async function create(input: {
    scope: Scope;
    definition: AgentDefinitionInput;
    imported: boolean;
    publish: boolean;
  }): Promise<AgentView> {
    const { scope } = input;
    const def = checkDefinition(input.definition);
    await deps.checkSecretUse?.(scope.workspaceId, def.tools);
    return guardName(def.name, () =>
      db.tenant(scope.workspaceId, async (tx) => {
        if (await repo.nameTaken(tx, scope.workspaceId, def.name)) throw nameTaken(def.name);
        const now = clock.now();
        const row: AgentRow = {
          id: newId('agt', now),
          workspaceId: scope.workspaceId,
          name: def.name,
          draft: def,
          latestVersion: 0,
          createdAt: now,
          updatedAt: now,
          archivedAt: null,
        };
        await repo.insertAgent(tx, row);
        const version = input.publish ? await insertVersion(tx, scope, row, def) : null;
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: input.imported ? 'agent.imported' : 'agent.created',
          target: { type: 'agent', id: row.id },
          diff: { name: def.name, ...(version ? { version: version.version } : {}) },
        });
        return agentView({ ...row, latestVersion: version?.version ?? 0 }, version);
      }),
    );
  }

  return {
    /**
     * Creates an agent whose draft is `definition` (nothing published yet).
     *
     * @example await agents.createAgent({ scope, definition: { name: 'support', model: 'gpt-4o-mini' } });
     */
    createAgent({ scope, definition }: { scope: Scope; definition: AgentDefinitionInput }): Promise<AgentView> {
      return create({ scope, definition, imported: false, publish: false });
    },

    /** Creates an agent from an exported definition; with `publish`, also as its version 1 (one audit event). */
    importAgent(input: { scope: Scope; definition: AgentDefinitionInput; publish: boolean }): Promise<AgentView> {
      return create({ ...input, imported: true });
    },

    async listAgents({
      scope,
      cursor,
      limit,
      archived: withArchived,
    }: {
      scope: Scope;
      cursor?: string;
      limit: number;
      archived: boolean;
    }): Promise<{ data: AgentSummary[]; nextCursor: string | null }> {
      const rows = await db.tenant(scope.workspaceId, (tx) =>
        repo.list(tx, scope.workspaceId, { limit: limit + 1, archived: withArchived, ...(cursor ? { cursor } : {}) }),
      );
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return {
        data: page.map((a) => ({
          id: a.id,
          name: a.name,
          description: a.description,
          model: a.model,
          latestVersion: a.latestVersion > 0 ? a.latestVersion : null,
          unpublishedChanges: !a.published,
          createdAt: a.createdAt.toISOString(),
          updatedAt: a.updatedAt.toISOString(),
          archivedAt: a.archivedAt?.toISOString() ?? null,
        })),
        nextCursor: rows.length > limit && last ? last.id : null,
      };
    },

    /** The agent `agent` names (id, or name of a live agent): its draft and latest version. */
    async getAgent({ scope, agent }: { scope: Scope; agent: string }): Promise<AgentView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const a = await mustFind(tx, scope.workspaceId, agent);
        return agentView(a, await latestOf(tx, a));
      });
    },

    /** Replaces the draft with `definition` (a rename included); published versions do not change. */
    async updateAgent({
      scope,
      agent,
      definition,
    }: {
      scope: Scope;
      agent: string;
      definition: AgentDefinitionInput;
    }): Promise<AgentView> {
      const def = checkDefinition(definition);
      await deps.checkSecretUse?.(scope.workspaceId, def.tools);
      return guardName(def.name, () =>
        db.tenant(scope.workspaceId, async (tx) => {
          const a = await mustFind(tx, scope.workspaceId, agent, true);
          if (a.archivedAt) throw archived(a);
          if (await repo.nameTaken(tx, scope.workspaceId, def.name, a.id)) throw nameTaken(def.name);
          const now = clock.now();
          await repo.updateDraft(tx, scope.workspaceId, a.id, { name: def.name, draft: def, updatedAt: now });
          await deps.audit.record(tx, {
            workspaceId: scope.workspaceId,
            actor: scope.actor,
            action: 'agent.updated',
            target: { type: 'agent', id: a.id },
            diff: a.name === def.name ? { name: def.name } : { name: { from: a.name, to: def.name } },
          });
          return agentView({ ...a, name: def.name, draft: def, updatedAt: now }, await latestOf(tx, a));
        }),
      );
    },

    /**
     * Publishes the draft as the next version (1, 2, 3...), which never changes afterwards.
     * A draft identical to the latest version is refused (409 `agent_unchanged`).
     */
    async publishAgent({ scope, agent }: { scope: Scope; agent: string }): Promise<VersionView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        // Locked: two publishes of one agent get consecutive numbers, never the same one.
        const a = await mustFind(tx, scope.workspaceId, agent, true);
        if (a.archivedAt) throw archived(a);
        const latest = await latestOf(tx, a);
        const def = checkDefinition(a.draft);
        if (latest && definitionText(latest.definition) === definitionText(def)) {
          throw new AppError(
            'agent_unchanged',
            `The draft of ${a.name} is identical to its version ${latest.version}: change it before publishing.`,
          );
        }
        const row = await insertVersion(tx, scope, a, def);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'agent.published',
          target: { type: 'agent', id: a.id },
          diff: { name: a.name, version: row.version },
        });
        return versionView(row);
      });
    },

    async listVersions({
      scope,
      agent,
      cursor,
      limit,
    }: {
      scope: Scope;
      agent: string;
      cursor?: number;
      limit: number;
    }): Promise<{ data: VersionSummary[]; nextCursor: number | null }> {
      const rows = await db.tenant(scope.workspaceId, async (tx) => {
        const a = await mustFind(tx, scope.workspaceId, agent);
        return repo.listVersions(tx, scope.workspaceId, a.id, {
          limit: limit + 1,
          ...(cursor ? { before: cursor } : {}),
        });
      });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return { data: page.map(versionSummary), nextCursor: rows.length > limit && last ? last.version : null };
    },

    /** A published version: what a run pins (404 when the agent or the version does not exist). */
    async getVersion({
      scope,
      agent,
      version,
    }: {
      scope: Scope;
      agent: string;
      version: number;
    }): Promise<VersionView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const a = await mustFind(tx, scope.workspaceId, agent);
        const v = await repo.findVersion(tx, scope.workspaceId, a.id, version);
        if (!v) throw notFound('version of this agent');
        return versionView(v);
      });
    },

    /** The definition of the draft, or of a published version: the export format, never secrets. */
    async exportAgent({
      scope,
      agent,
      version,
    }: {
      scope: Scope;
      agent: string;
      version?: number;
    }): Promise<AgentDefinition> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const a = await mustFind(tx, scope.workspaceId, agent);
        if (version === undefined) return a.draft;
        const v = await repo.findVersion(tx, scope.workspaceId, a.id, version);
        if (!v) throw notFound('version of this agent');
        return v.definition;
      });
    },

    /** Archives an agent: kept with its versions (runs refer to them), its name free again, no longer changeable. */
    async archiveAgent({ scope, agent }: { scope: Scope; agent: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const a = await mustFind(tx, scope.workspaceId, agent, true);
        if (a.archivedAt) throw archived(a);
        await repo.archive(tx, scope.workspaceId, a.id, clock.now());
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'agent.archived',
          target: { type: 'agent', id: a.id },
          diff: { name: a.name },
        });
      });
    },
  };
}

export type AgentsService = ReturnType<typeof agentsService>;
