import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { AuditInput } from '../audit/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { SecretsRepo } from './agents.secrets.repo.ts';
import type { SecretView, SetSecretInput } from './agents.secrets.schemas.ts';
import type { AgentSecretRow } from './agents.secrets.tables.ts';
import type { SecretPlacement, ToolSecret } from './agents.tools.http.ts';

export type SecretsDeps = {
  db: Pick<Db, 'tenant'>;
  repo: SecretsRepo;
  clock: Clock;
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
};

/** The vault context of a secret's value: the workspace's data key, bound to the row. */
const valueContext = (workspaceId: string, secretId: string) =>
  ({ owner: { type: 'workspace', id: workspaceId }, record: secretId, field: 'agent_secret_value' }) as const;

function toView(row: AgentSecretRow): SecretView {
  return {
    name: row.name,
    allowedHosts: row.allowedHosts,
    allowedHeaders: row.allowedHeaders,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/**
 * Workspace secrets for agent tools: set (create or replace), list (names, hosts and headers,
 * never values) and delete, each audited without the value. Tools read values through `source`.
 *
 * @example await secrets.setSecret({ scope, name: 'GITHUB_TOKEN', input: { value, allowedHosts: ['api.github.com'] } });
 */
export function secretsService(deps: SecretsDeps) {
  const { db, repo, clock } = deps;
  const actorUser = (scope: Scope) => (scope.actor.type === 'system' ? null : scope.actor.userId);

  return {
    async setSecret({
      scope,
      name,
      input,
    }: {
      scope: Scope;
      name: string;
      input: SetSecretInput;
    }): Promise<SecretView> {
      const now = clock.now();
      const allowedHosts = [...new Set(input.allowedHosts)];
      const allowedHeaders = [...new Set((input.allowedHeaders ?? ['authorization']).map((h) => h.toLowerCase()))];
      return db.tenant(scope.workspaceId, async (tx) => {
        const existing = await repo.findByName(tx, scope.workspaceId, name);
        const id = existing?.id ?? newId('sec', now);
        const valueCiphertext = await deps.vault.encrypt(valueContext(scope.workspaceId, id), input.value, tx);
        let row: AgentSecretRow;
        if (existing) {
          await repo.replace(tx, scope.workspaceId, id, {
            valueCiphertext,
            allowedHosts,
            allowedHeaders,
            updatedAt: now,
          });
          row = { ...existing, valueCiphertext, allowedHosts, allowedHeaders, updatedAt: now };
        } else {
          row = {
            id,
            workspaceId: scope.workspaceId,
            name,
            valueCiphertext,
            allowedHosts,
            allowedHeaders,
            createdBy: actorUser(scope),
            createdAt: now,
            updatedAt: now,
          };
          await repo.insert(tx, row);
        }
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'secret.set',
          target: { type: 'secret', id },
          diff: { name, allowedHosts, allowedHeaders, replaced: Boolean(existing) },
        });
        return toView(row);
      });
    },

    async listSecrets({ scope }: { scope: Scope }): Promise<SecretView[]> {
      return db.tenant(scope.workspaceId, async (tx) => (await repo.list(tx, scope.workspaceId)).map(toView));
    },

    async deleteSecret({ scope, name }: { scope: Scope; name: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const gone = await repo.delete(tx, scope.workspaceId, name);
        if (!gone) throw new AppError('not_found', 'No such secret.');
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'secret.deleted',
          target: { type: 'secret', id: gone.id },
          diff: { name },
        });
      });
    },

    /** The named secrets' values and hosts (absent names are left out), decrypted in memory only. */
    async source(workspaceId: string, names: string[]): Promise<Map<string, ToolSecret>> {
      return db.tenant(workspaceId, async (tx) => {
        const out = new Map<string, ToolSecret>();
        for (const row of await repo.findByNames(tx, workspaceId, [...new Set(names)])) {
          const value = await deps.vault.decryptString(valueContext(workspaceId, row.id), row.valueCiphertext, tx);
          out.set(row.name, { value, allowedHosts: row.allowedHosts, allowedHeaders: row.allowedHeaders });
        }
        return out;
      });
    },

    /** Where the named secrets may go (absent names are left out); no value is decrypted. */
    async placements(workspaceId: string, names: string[]): Promise<Map<string, SecretPlacement>> {
      return db.tenant(workspaceId, async (tx) => {
        const out = new Map<string, SecretPlacement>();
        for (const row of await repo.findByNames(tx, workspaceId, [...new Set(names)])) {
          out.set(row.name, { allowedHosts: row.allowedHosts, allowedHeaders: row.allowedHeaders });
        }
        return out;
      });
    },
  };
}

export type SecretsService = ReturnType<typeof secretsService>;
