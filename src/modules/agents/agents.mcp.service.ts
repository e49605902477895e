import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError, type ErrorCode } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { assertEgress, type EgressGuard } from '../../platform/http/egress.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { AuditInput } from '../audit/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { McpRepo } from './agents.mcp.repo.ts';
import type { AddMcpServerInput, McpServerView, UpdateMcpServerInput } from './agents.mcp.schemas.ts';
import type { McpServerRow } from './agents.mcp.tables.ts';
import { type ToolErrorCode, ToolFailure } from './agents.tools.core.ts';
import { assertSecretHeaders, assertSecretsAllowed, type SecretSource, secretRefs } from './agents.tools.http.ts';
import { listMcpTools, type McpDeps, type McpLimits, type McpTarget, mcpToolName } from './agents.tools.mcp.ts';
import { credentialParams } from './agents.tools.policy.ts';

export type McpServiceDeps = {
  db: Pick<Db, 'tenant'>;
  repo: McpRepo;
  clock: Clock;
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  secrets: SecretSource;
  egress: EgressGuard;
  /** Hosts a secret may reach over plain http (those in BERTH_EGRESS_ALLOW). */
  plainHttpAllowed: (host: string) => boolean;
  client: McpDeps;
  limits: McpLimits;
};

const headersContext = (workspaceId: string, serverId: string) =>
  ({ owner: { type: 'workspace', id: workspaceId }, record: serverId, field: 'mcp_headers' }) as const;

const SECRET_TEMPLATE = /\{\{\s*secret\.([A-Za-z0-9_]+)\s*\}\}/g;

/** How a failed MCP operation answers on the API (the tool result codes, as HTTP errors). */
const API_CODES: Partial<Record<ToolErrorCode, ErrorCode>> = {
  mcp_server_not_found: 'mcp_server_not_found',
  mcp_server_disabled: 'mcp_server_disabled',
  mcp_stdio_disabled: 'mcp_stdio_disabled',
  secret_not_found: 'secret_not_found',
  secret_host_not_allowed: 'egress_denied',
  secret_placement_not_allowed: 'secret_placement_not_allowed',
  egress_denied: 'egress_denied',
  timeout: 'upstream_timeout',
};

export function toAppError(err: unknown): unknown {
  if (!(err instanceof ToolFailure)) return err;
  return new AppError(API_CODES[err.code] ?? 'upstream_error', err.message);
}

function toView(row: McpServerRow): McpServerView {
  return {
    id: row.id,
    name: row.name,
    transport: row.transport,
    url: row.url,
    command: row.command,
    args: row.args,
    headerNames: row.headerNames,
    enabled: row.enabled,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/**
 * MCP servers a workspace connects: managed by owners and admins (audited; header values,
 * which may hold credentials or `{{secret.NAME}}` references, stored encrypted), listed by
 * everyone who sees agents, and turned into call targets for agent tools.
 */
export function mcpService(deps: McpServiceDeps) {
  const { db, repo, clock } = deps;
  const actorUser = (scope: Scope) => (scope.actor.type === 'system' ? null : scope.actor.userId);

  function checkUrl(raw: string): string {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new AppError('validation_failed', 'The url is not a valid URL.', {
        details: [{ path: '/url', message: 'not a URL' }],
      });
    }
    if (url.username || url.password) {
      throw new AppError('validation_failed', 'Put credentials in headers (or a secret), not in the url.', {
        details: [{ path: '/url', message: 'credentials in the URL' }],
      });
    }
    // Server URLs are shown to every member: a key in the query would be readable by all of them.
    const params = credentialParams(raw);
    if (params.length > 0) {
      throw new AppError(
        'credential_in_definition',
        'Put credentials in headers with a workspace secret ({{secret.NAME}}), not in the url.',
        { details: [{ path: '/url', message: `the query carries ${params.join(', ').slice(0, 200)}` }] },
      );
    }
    assertEgress(deps.egress, url);
    return url.toString();
  }

  async function sealHeaders(tx: Database, workspaceId: string, id: string, headers: Record<string, string>) {
    const names = Object.keys(headers);
    if (names.length === 0) return { headerNames: [], headersCiphertext: null };
    return {
      headerNames: names,
      headersCiphertext: await deps.vault.encrypt(headersContext(workspaceId, id), JSON.stringify(headers), tx),
    };
  }

  async function visible(tx: Database, workspaceId: string, id: string): Promise<McpServerRow> {
    const row = isId(id, 'mcp') ? await repo.findById(tx, workspaceId, id) : undefined;
    if (!row) throw new AppError('not_found', 'No such MCP server.');
    return row;
  }

  /** The row's call target: headers decrypted and their secrets filled in (memory only). Throws ToolFailure. */
  async function targetOf(workspaceId: string, row: McpServerRow | undefined, name: string): Promise<McpTarget> {
    if (!row) throw new ToolFailure('mcp_server_not_found', `The workspace has no MCP server named ${name}.`);
    if (!row.enabled) throw new ToolFailure('mcp_server_disabled', `The MCP server ${row.name} is disabled.`);
    if (row.transport === 'stdio') {
      if (!deps.client.stdioAllowed) {
        throw new ToolFailure('mcp_stdio_disabled', 'MCP servers over stdio are not enabled on this Berth.');
      }
      return { transport: 'stdio', command: row.command ?? '', args: row.args };
    }
    const url = new URL(row.url ?? '');
    const stored = row.headersCiphertext
      ? (JSON.parse(
          await db.tenant(workspaceId, (tx) =>
            deps.vault.decryptString(headersContext(workspaceId, row.id), row.headersCiphertext as Buffer, tx),
          ),
        ) as Record<string, string>)
      : {};
    const refs = [...secretRefs(stored)];
    const secrets = refs.length > 0 ? await deps.secrets(workspaceId, refs) : new Map();
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(stored)) {
      headers[k] = v.replace(SECRET_TEMPLATE, (_m, ref: string) => {
        const secret = secrets.get(ref);
        if (!secret) throw new ToolFailure('secret_not_found', `The workspace has no secret named ${ref}.`);
        return secret.value;
      });
    }
    assertSecretsAllowed(url.hostname, refs, secrets);
    assertSecretHeaders(
      url,
      Object.entries(stored).map(([k, v]) => [k, secretRefs(v)] as [string, Set<string>]),
      secrets,
      deps.plainHttpAllowed,
    );
    return { transport: 'http', url: url.toString(), headers, secrets: [...secrets.values()] };
  }

  return {
    async addServer({ scope, input }: { scope: Scope; input: AddMcpServerInput }): Promise<McpServerView> {
      if ((input.url === undefined) === (input.command === undefined)) {
        throw new AppError('validation_failed', 'Give either url (streamable HTTP) or command (stdio).', {
          details: [{ path: '/url', message: 'exactly one of url and command' }],
        });
      }
      const stdio = input.command !== undefined;
      if (stdio && !deps.client.stdioAllowed) {
        throw new AppError(
          'mcp_stdio_disabled',
          'MCP servers over stdio are not enabled on this Berth (BERTH_MCP_STDIO).',
        );
      }
      if (stdio && input.headers) {
        throw new AppError('validation_failed', 'A stdio server takes no headers.', {
          details: [{ path: '/headers', message: 'stdio servers take no headers' }],
        });
      }
      if (!stdio && input.args) {
        throw new AppError('validation_failed', 'Only stdio servers take args.', {
          details: [{ path: '/args', message: 'only with command' }],
        });
      }
      const url = input.url === undefined ? null : checkUrl(input.url);
      const now = clock.now();
      const id = newId('mcp', now);
      return db.tenant(scope.workspaceId, async (tx) => {
        if (await repo.findByName(tx, scope.workspaceId, input.name)) {
          throw new AppError('conflict', `An MCP server named ${input.name} exists in this workspace.`);
        }
        const row: McpServerRow = {
          id,
          workspaceId: scope.workspaceId,
          name: input.name,
          transport: stdio ? 'stdio' : 'http',
          url,
          command: input.command ?? null,
          args: input.args ?? [],
          ...(await sealHeaders(tx, scope.workspaceId, id, input.headers ?? {})),
          enabled: input.enabled ?? true,
          createdBy: actorUser(scope),
          createdAt: now,
          updatedAt: now,
        };
        await repo.insert(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'mcp_server.added',
          target: { type: 'mcp_server', id },
          diff: {
            name: row.name,
            transport: row.transport,
            url: row.url,
            command: row.command,
            headerNames: row.headerNames,
            enabled: row.enabled,
          },
        });
        return toView(row);
      });
    },

    async listServers({ scope }: { scope: Scope }): Promise<McpServerView[]> {
      return db.tenant(scope.workspaceId, async (tx) => (await repo.list(tx, scope.workspaceId)).map(toView));
    },

    async getServer({ scope, serverId }: { scope: Scope; serverId: string }): Promise<McpServerView> {
      return db.tenant(scope.workspaceId, async (tx) => toView(await visible(tx, scope.workspaceId, serverId)));
    },

    async updateServer({
      scope,
      serverId,
      input,
    }: {
      scope: Scope;
      serverId: string;
      input: UpdateMcpServerInput;
    }): Promise<McpServerView> {
      const url = input.url === undefined ? undefined : checkUrl(input.url);
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await visible(tx, scope.workspaceId, serverId);
        if (row.transport === 'stdio' && (url !== undefined || input.headers)) {
          throw new AppError('validation_failed', 'A stdio server has no url or headers.', {
            details: [{ path: input.headers ? '/headers' : '/url', message: 'not for stdio servers' }],
          });
        }
        const set: Parameters<McpRepo['update']>[3] = { updatedAt: clock.now() };
        if (url !== undefined) set.url = url;
        if (input.enabled !== undefined) set.enabled = input.enabled;
        if (input.headers !== undefined)
          Object.assign(set, await sealHeaders(tx, scope.workspaceId, row.id, input.headers ?? {}));
        await repo.update(tx, scope.workspaceId, row.id, set);
        const updated = { ...row, ...set };
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'mcp_server.updated',
          target: { type: 'mcp_server', id: row.id },
          diff: {
            name: row.name,
            ...(url !== undefined ? { url } : {}),
            ...(input.enabled !== undefined ? { enabled: input.enabled } : {}),
            ...(input.headers !== undefined ? { headerNames: updated.headerNames } : {}),
          },
        });
        return toView(updated);
      });
    },

    async deleteServer({ scope, serverId }: { scope: Scope; serverId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visible(tx, scope.workspaceId, serverId);
        await repo.delete(tx, scope.workspaceId, row.id);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'mcp_server.removed',
          target: { type: 'mcp_server', id: row.id },
          diff: { name: row.name },
        });
      });
    },

    /** Asks the server which tools it has (what an agent's `allow` may list). */
    async listServerTools({ scope, serverId }: { scope: Scope; serverId: string }) {
      const row = await db.tenant(scope.workspaceId, (tx) => visible(tx, scope.workspaceId, serverId));
      try {
        const target = await targetOf(scope.workspaceId, row, row.name);
        const tools = await listMcpTools(target, deps.client, deps.limits);
        return tools.map((t) => ({ ...t, agentToolName: mcpToolName(row.name, t.name) }));
      } catch (err) {
        throw toAppError(err);
      }
    },

    /** The call target of the workspace's server `name`. Throws ToolFailure (see `toAppError`). */
    async targetByName(workspaceId: string, name: string): Promise<McpTarget> {
      const row = await db.tenant(workspaceId, (tx) => repo.findByName(tx, workspaceId, name));
      return targetOf(workspaceId, row, name);
    },
  };
}

export type McpService = ReturnType<typeof mcpService>;
