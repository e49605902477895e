import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { notFound } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import type { AuditInput } from '../audit/index.ts';
import type { GatewayRepo } from './gateway.repo.ts';
import type { PriceView, RouteView, SetPriceInput, SetRouteInput } from './gateway.schemas.ts';
import type { PriceRow, RouteRow } from './gateway.tables.ts';

export type SettingsDeps = {
  db: Pick<Db, 'tenant'>;
  repo: GatewayRepo;
  clock: Clock;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  /** The providers service's `changedAfterCommit`: every replica reloads the workspace. */
  changed(tx: Database, workspaceId: string): void;
};

function priceView(row: PriceRow): PriceView {
  return {
    model: row.model,
    inputMicrosPerMtok: row.inputMicrosPerMtok,
    outputMicrosPerMtok: row.outputMicrosPerMtok,
    cachedInputMicrosPerMtok: row.cachedInputMicrosPerMtok,
    contextWindow: row.contextWindow,
    updatedAt: row.updatedAt.toISOString(),
  };
}

function routeView(row: RouteRow): RouteView {
  return { alias: row.alias, strategy: row.strategy, targets: row.targets, updatedAt: row.updatedAt.toISOString() };
}

/** A workspace's prices and model aliases: audited changes that every replica picks up at once. */
export function settingsService(deps: SettingsDeps) {
  const { db, repo, clock, changed } = deps;

  async function remove(
    scope: Scope,
    what: string,
    del: (tx: Database) => Promise<boolean>,
    action: string,
    target: AuditInput['target'],
  ) {
    await db.tenant(scope.workspaceId, async (tx) => {
      if (!(await del(tx))) throw notFound(what);
      await deps.audit.record(tx, { workspaceId: scope.workspaceId, actor: scope.actor, action, target });
      changed(tx, scope.workspaceId);
    });
  }

  return {
    async setPrice({ scope, input }: { scope: Scope; input: SetPriceInput }): Promise<PriceView> {
      const row: PriceRow = {
        workspaceId: scope.workspaceId,
        model: input.model,
        inputMicrosPerMtok: input.inputMicrosPerMtok,
        outputMicrosPerMtok: input.outputMicrosPerMtok,
        cachedInputMicrosPerMtok: input.cachedInputMicrosPerMtok ?? null,
        contextWindow: input.contextWindow ?? null,
        updatedAt: clock.now(),
      };
      return db.tenant(scope.workspaceId, async (tx) => {
        await repo.upsertPrice(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'model_price.set',
          target: { type: 'model', id: row.model },
          diff: {
            inputMicrosPerMtok: row.inputMicrosPerMtok,
            outputMicrosPerMtok: row.outputMicrosPerMtok,
            cachedInputMicrosPerMtok: row.cachedInputMicrosPerMtok,
            contextWindow: row.contextWindow,
          },
        });
        changed(tx, scope.workspaceId);
        return priceView(row);
      });
    },

    /** Defines (or replaces) a model alias. */
    async setRoute({ scope, input }: { scope: Scope; input: SetRouteInput }): Promise<RouteView> {
      const row: RouteRow = {
        workspaceId: scope.workspaceId,
        alias: input.alias,
        strategy: input.strategy ?? 'fallback',
        targets: input.targets.map((t) => ({
          model: t.model,
          ...(t.provider ? { provider: t.provider } : {}),
          ...(t.weight !== undefined ? { weight: t.weight } : {}),
        })),
        updatedAt: clock.now(),
      };
      return db.tenant(scope.workspaceId, async (tx) => {
        await repo.upsertRoute(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'route.set',
          target: { type: 'route', id: row.alias },
          diff: { strategy: row.strategy, targets: row.targets },
        });
        changed(tx, scope.workspaceId);
        return routeView(row);
      });
    },

    async listRoutes({ scope }: { scope: Scope }): Promise<RouteView[]> {
      return db.tenant(scope.workspaceId, async (tx) => (await repo.listRoutes(tx, scope.workspaceId)).map(routeView));
    },

    removeRoute({ scope, alias }: { scope: Scope; alias: string }): Promise<void> {
      return remove(scope, 'route', (tx) => repo.deleteRoute(tx, scope.workspaceId, alias), 'route.removed', {
        type: 'route',
        id: alias,
      });
    },

    async listPrices({ scope }: { scope: Scope }): Promise<PriceView[]> {
      return db.tenant(scope.workspaceId, async (tx) => (await repo.listPrices(tx, scope.workspaceId)).map(priceView));
    },

    removePrice({ scope, model }: { scope: Scope; model: string }): Promise<void> {
      return remove(scope, 'price', (tx) => repo.deletePrice(tx, scope.workspaceId, model), 'model_price.removed', {
        type: 'model',
        id: model,
      });
    },
  };
}

export type SettingsService = ReturnType<typeof settingsService>;
