import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { afterCommit } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { assertEgress, type EgressGuard } from '../../platform/http/egress.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditInput } from '../audit/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { WorkspaceStatus } from '../workspaces/index.ts';
import type { ProviderAdapter } from './gateway.adapter.ts';
import { catalogLookup, type ModelPrice } from './gateway.catalog.ts';
import type { GatewayRepo } from './gateway.repo.ts';
import type { AddProviderInput, ProviderView } from './gateway.schemas.ts';
import type { ProviderRow, RouteRow } from './gateway.tables.ts';
import { createAnthropicAdapter } from './providers/anthropic.ts';
import { createOpenAiCompatibleAdapter } from './providers/openai-compatible.ts';

/** A provider ready to call: its adapter holds the decrypted credential, in memory only. */
export type LiveProvider = {
  /** The operator's provider, shared by every workspace (after the workspace's own). */
  platform: boolean;
  id: string;
  name: string;
  adapterKind: ProviderRow['adapter'];
  models: string[];
  timeoutMs: number;
  adapter: ProviderAdapter;
};

/** What the gateway knows about one workspace, cached in memory and dropped on every change. */
export type WorkspaceGateway = {
  /** The workspace's standing: calls go upstream only while it is active. */
  status: WorkspaceStatus | null;
  /** The workspace plan's limit of gateway requests per minute (null: none). */
  planRpm: number | null;
  providers: LiveProvider[];
  prices: Map<string, ModelPrice>;
  routes: Map<string, Pick<RouteRow, 'strategy' | 'targets'>>;
  loadedAt: number;
};

type Credentials = { apiKey?: string; headers?: Record<string, string> };

export type ProvidersDeps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: GatewayRepo;
  clock: Clock;
  logger: Logger;
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  egress: EgressGuard;
  /** The workspace's standing (the workspaces module's). */
  statusOf(workspaceId: string): Promise<WorkspaceStatus | null>;
  /** The limits of the workspace's plan (billing's); none without billing. */
  planLimitsOf?(workspaceId: string): Promise<{ rateLimitRpm: number | null }>;
  /** Tells every replica that a workspace's gateway settings changed. */
  publish(workspaceId: string): Promise<void>;
  cacheTtlMs?: number;
  /** Builds the adapter for a provider; tests may wrap it. */
  createAdapter?: (row: ProviderBase, credentials: Credentials, egress: EgressGuard) => ProviderAdapter;
  /** Tells every replica that the platform providers changed. */
  publishPlatform(): Promise<void>;
};

const credentialsContext = (workspaceId: string, providerId: string) =>
  ({ owner: { type: 'workspace', id: workspaceId }, record: providerId, field: 'credentials' }) as const;

const PLATFORM_OWNER = { type: 'platform', id: 'platform' } as const;
const platformCredentialsContext = (providerId: string) =>
  ({ owner: PLATFORM_OWNER, record: providerId, field: 'platform_credentials' }) as const;

/** What a workspace's and a platform provider have in common. */
export type ProviderBase = Omit<ProviderRow, 'workspaceId'>;

export function defaultAdapter(row: ProviderBase, credentials: Credentials, egress: EgressGuard): ProviderAdapter {
  const common = {
    name: row.name,
    baseUrl: row.baseUrl,
    ...(credentials.apiKey ? { apiKey: credentials.apiKey } : {}),
    ...(credentials.headers ? { headers: credentials.headers } : {}),
    timeoutMs: row.timeoutMs,
    lookup: egress.lookup,
  };
  if (row.adapter === 'anthropic') return createAnthropicAdapter(common);
  return createOpenAiCompatibleAdapter(common);
}

function toView(row: ProviderBase, hasCredentials: boolean): ProviderView {
  return {
    id: row.id,
    name: row.name,
    adapter: row.adapter,
    baseUrl: row.baseUrl,
    models: row.models,
    timeoutMs: row.timeoutMs,
    hasCredentials,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

function actorUser(scope: Scope): string | null {
  return scope.actor.type === 'system' ? null : scope.actor.userId;
}

/**
 * Providers and prices of workspaces: management (audited, credentials through the vault)
 * and the in-memory view the hot path reads (`workspace(id)`), reloaded after a TTL or
 * at once when any replica changes the workspace's settings.
 */
export function providersService(deps: ProvidersDeps) {
  const { db, repo, clock } = deps;
  const ttl = deps.cacheTtlMs ?? 60_000;
  const make = deps.createAdapter ?? defaultAdapter;
  const cache = new Map<string, Promise<WorkspaceGateway>>();
  const live = new Map<string, WorkspaceGateway>();

  function checkUrl(raw: string) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new AppError('validation_failed', 'The base URL is not a valid URL.', {
        details: [{ path: '/baseUrl', message: 'not a URL' }],
      });
    }
    if (url.username || url.password) {
      throw new AppError('validation_failed', 'Put credentials in apiKey or headers, not in the base URL.', {
        details: [{ path: '/baseUrl', message: 'credentials in the URL' }],
      });
    }
    assertEgress(deps.egress, url);
    return url.toString().replace(/\/+$/, '');
  }

  async function load(workspaceId: string): Promise<WorkspaceGateway> {
    const { rows, prices, routes, creds } = await db.tenant(workspaceId, async (tx) => {
      const rows = await repo.listProviders(tx, workspaceId);
      const prices = await repo.listPrices(tx, workspaceId);
      const routes = await repo.listRoutes(tx, workspaceId);
      const creds = new Map<string, Credentials>();
      for (const row of rows) {
        if (!row.credentialsCiphertext) continue;
        const plain = await deps.vault.decrypt(credentialsContext(workspaceId, row.id), row.credentialsCiphertext, tx);
        creds.set(row.id, JSON.parse(plain.toString('utf8')) as Credentials);
      }
      return { rows, prices, routes, creds };
    });
    const providers: LiveProvider[] = [];
    for (const row of rows) {
      try {
        providers.push({
          platform: false,
          id: row.id,
          name: row.name,
          adapterKind: row.adapter,
          models: row.models,
          timeoutMs: row.timeoutMs,
          adapter: make(row, creds.get(row.id) ?? {}, deps.egress),
        });
      } catch {
        deps.logger.warn({ provider: row.id }, 'gateway: a provider could not be loaded; it is skipped');
      }
    }
    providers.push(...(await platformProviders()));
    const status = await deps.statusOf(workspaceId);
    const limits = deps.planLimitsOf ? await deps.planLimitsOf(workspaceId) : null;
    return {
      status,
      planRpm: limits?.rateLimitRpm ?? null,
      providers,
      prices: new Map(
        prices.map((p) => [
          p.model,
          {
            inputMicrosPerMtok: p.inputMicrosPerMtok,
            outputMicrosPerMtok: p.outputMicrosPerMtok,
            cachedInputMicrosPerMtok: p.cachedInputMicrosPerMtok,
            contextWindow: p.contextWindow,
          },
        ]),
      ),
      routes: new Map(routes.map((r) => [r.alias, { strategy: r.strategy, targets: r.targets }])),
      loadedAt: clock.now().getTime(),
    };
  }

  function retire(workspaceId: string) {
    cache.delete(workspaceId);
    const old = live.get(workspaceId);
    live.delete(workspaceId);
    // In-flight calls keep their adapter; its pool closes once they are done.
    if (old) for (const p of old.providers) if (!p.platform) void p.adapter.close().catch(() => undefined);
  }

  let platform: { loadedAt: number; providers: Promise<LiveProvider[]> } | null = null;

  /** The operator's providers, loaded once for every workspace and reloaded with the TTL or on change. */
  function platformProviders(): Promise<LiveProvider[]> {
    const now = clock.now().getTime();
    if (platform && now - platform.loadedAt < ttl) return platform.providers;
    retirePlatform();
    const providers = db
      .system(async (tx) => {
        const rows = await repo.listPlatformProviders(tx);
        const out: LiveProvider[] = [];
        for (const row of rows) {
          try {
            const creds = row.credentialsCiphertext
              ? (JSON.parse(
                  (
                    await deps.vault.decrypt(platformCredentialsContext(row.id), row.credentialsCiphertext, tx)
                  ).toString('utf8'),
                ) as Credentials)
              : {};
            out.push({
              platform: true,
              id: row.id,
              name: row.name,
              adapterKind: row.adapter,
              models: row.models,
              timeoutMs: row.timeoutMs,
              adapter: make(row, creds, deps.egress),
            });
          } catch {
            deps.logger.warn({ provider: row.id }, 'gateway: a platform provider could not be loaded; it is skipped');
          }
        }
        return out;
      })
      .catch((err: unknown) => {
        platform = null;
        throw err;
      });
    platform = { loadedAt: now, providers };
    return providers;
  }

  function retirePlatform() {
    const old = platform;
    platform = null;
    void old?.providers.then(
      (ps) => {
        for (const p of ps) void p.adapter.close().catch(() => undefined);
      },
      () => undefined,
    );
  }

  /** Checks the input and builds the row (asking the provider for its models when none are given). */
  async function prepare(input: AddProviderInput, createdBy: string | null) {
    const baseUrl = checkUrl(input.baseUrl);
    const now = clock.now();
    const credentials: Credentials = {
      ...(input.apiKey ? { apiKey: input.apiKey } : {}),
      ...(input.headers && Object.keys(input.headers).length > 0 ? { headers: input.headers } : {}),
    };
    const row: ProviderBase = {
      id: newId('prv', now),
      name: input.name,
      adapter: input.adapter,
      baseUrl,
      credentialsCiphertext: null,
      models: input.models ? [...new Set(input.models)] : [],
      timeoutMs: input.timeoutMs ?? 60_000,
      createdBy,
      createdAt: now,
      updatedAt: now,
    };
    if (!input.models) {
      const adapter = make(row, credentials, deps.egress);
      try {
        row.models = [...new Set(await adapter.listModels({ timeoutMs: Math.min(row.timeoutMs, 15_000) }))].slice(
          0,
          1000,
        );
      } catch {
        throw new AppError(
          'bad_request',
          'The provider did not list its models (GET /models failed); pass the model list with `models`.',
        );
      } finally {
        await adapter.close();
      }
    }
    const hasCredentials = Object.keys(credentials).length > 0;
    const sealed = (ctx: Parameters<typeof deps.vault.encrypt>[0], tx: Database) =>
      hasCredentials
        ? deps.vault.encrypt(ctx, Buffer.from(JSON.stringify(credentials), 'utf8'), tx)
        : Promise.resolve(null);
    return { row, hasCredentials, sealed };
  }

  function platformChanged(tx: Database) {
    afterCommit(tx, async () => {
      retirePlatform();
      forgetAll();
      await deps.publishPlatform().catch(() => deps.logger.warn('gateway: could not tell other replicas of a change'));
    });
  }

  function forgetAll() {
    for (const ws of [...live.keys(), ...cache.keys()]) retire(ws);
  }

  function changed(tx: Database, workspaceId: string) {
    afterCommit(tx, async () => {
      retire(workspaceId);
      await deps
        .publish(workspaceId)
        .catch(() => deps.logger.warn('gateway: could not tell other replicas of a change'));
    });
  }

  async function visibleProvider(tx: Database, workspaceId: string, id: string) {
    const row = isId(id, 'prv') ? await repo.findProvider(tx, workspaceId, id) : undefined;
    if (!row) throw notFound('provider');
    return row;
  }

  return {
    /** The workspace's providers and prices as the hot path sees them. */
    async workspace(workspaceId: string): Promise<WorkspaceGateway> {
      const hit = live.get(workspaceId);
      if (hit && clock.now().getTime() - hit.loadedAt < ttl) return hit;
      if (hit) retire(workspaceId);
      let pending = cache.get(workspaceId);
      if (!pending) {
        pending = load(workspaceId).then(
          (w) => {
            if (cache.get(workspaceId) === pending) live.set(workspaceId, w);
            return w;
          },
          (err) => {
            cache.delete(workspaceId);
            throw err;
          },
        );
        cache.set(workspaceId, pending);
      }
      return pending;
    },

    /** Another replica changed this workspace's settings (or the bus had a gap: `null`, all). */
    forget(workspaceId: string | null) {
      if (workspaceId === null) {
        retirePlatform();
        forgetAll();
      } else retire(workspaceId);
    },

    async close() {
      forgetAll();
      retirePlatform();
    },

    /** Connects a provider; with no model list given, asks the provider which models it serves. */
    async addProvider({ scope, input }: { scope: Scope; input: AddProviderInput }): Promise<ProviderView> {
      const { row: base, hasCredentials, sealed } = await prepare(input, actorUser(scope));
      const row: ProviderRow = { ...base, workspaceId: scope.workspaceId };
      return db.tenant(scope.workspaceId, async (tx) => {
        if (await repo.findProviderByName(tx, scope.workspaceId, row.name)) {
          throw new AppError('conflict', `A provider named ${row.name} exists in this workspace.`);
        }
        row.credentialsCiphertext = await sealed(credentialsContext(scope.workspaceId, row.id), tx);
        await repo.insertProvider(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'provider.added',
          target: { type: 'provider', id: row.id },
          diff: {
            name: row.name,
            adapter: row.adapter,
            baseUrl: row.baseUrl,
            models: row.models.slice(0, 50),
            hasCredentials,
          },
        });
        changed(tx, scope.workspaceId);
        return toView(row, hasCredentials);
      });
    },

    /** Connects a provider for every workspace (operators; recorded on the platform audit chain). */
    async addPlatformProvider({ actor, input }: { actor: Actor; input: AddProviderInput }): Promise<ProviderView> {
      const { row, hasCredentials, sealed } = await prepare(input, actor.type === 'system' ? null : actor.userId);
      return db.system(async (tx) => {
        if (await repo.findPlatformProviderByName(tx, row.name)) {
          throw new AppError('conflict', `A platform provider named ${row.name} exists.`);
        }
        row.credentialsCiphertext = await sealed(platformCredentialsContext(row.id), tx);
        await repo.insertPlatformProvider(tx, row);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'platform_provider.added',
          target: { type: 'provider', id: row.id },
          diff: {
            name: row.name,
            adapter: row.adapter,
            baseUrl: row.baseUrl,
            models: row.models.slice(0, 50),
            hasCredentials,
          },
        });
        platformChanged(tx);
        return toView(row, hasCredentials);
      });
    },

    async listPlatformProviders(): Promise<ProviderView[]> {
      return db.system(async (tx) =>
        (await repo.listPlatformProviders(tx)).map((r) => toView(r, r.credentialsCiphertext !== null)),
      );
    },

    /** Removes a platform provider and its credential. Accepts its id or its name. */
    async removePlatformProvider({ actor, provider }: { actor: Actor; provider: string }): Promise<void> {
      await db.system(async (tx) => {
        const found = isId(provider, 'prv')
          ? (await repo.listPlatformProviders(tx)).find((r) => r.id === provider)
          : await repo.findPlatformProviderByName(tx, provider);
        if (!found) throw notFound('provider');
        await repo.deletePlatformProvider(tx, found.id);
        await deps.audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'platform_provider.removed',
          target: { type: 'provider', id: found.id },
          diff: { name: found.name },
        });
        platformChanged(tx);
      });
    },

    /** Adds the providers of the operator's file that do not exist yet (by name); returns the names added. */
    async seedPlatformProviders(entries: AddProviderInput[]): Promise<string[]> {
      const existing = new Set((await this.listPlatformProviders()).map((p) => p.name));
      const added: string[] = [];
      for (const input of entries) {
        if (existing.has(input.name)) continue;
        await this.addPlatformProvider({ actor: { type: 'system', name: 'config' }, input });
        added.push(input.name);
      }
      return added;
    },

    async listProviders({ scope }: { scope: Scope }): Promise<ProviderView[]> {
      return db.tenant(scope.workspaceId, async (tx) =>
        (await repo.listProviders(tx, scope.workspaceId)).map((r) => toView(r, r.credentialsCiphertext !== null)),
      );
    },

    async getProvider({ scope, providerId }: { scope: Scope; providerId: string }): Promise<ProviderView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleProvider(tx, scope.workspaceId, providerId);
        return toView(row, row.credentialsCiphertext !== null);
      });
    },

    /** Removes a provider and its credential (the ciphertext goes with the row). */
    async removeProvider({ scope, providerId }: { scope: Scope; providerId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const row = await visibleProvider(tx, scope.workspaceId, providerId);
        await repo.deleteProvider(tx, scope.workspaceId, row.id);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'provider.removed',
          target: { type: 'provider', id: row.id },
          diff: { name: row.name },
        });
        changed(tx, scope.workspaceId);
      });
    },

    /** Drops this replica's view of the workspace once `tx` commits, and tells the other replicas. */
    changedAfterCommit: changed,
  };
}

export type ProvidersService = ReturnType<typeof providersService>;

/** A model's price: the workspace's own, else the catalog's, else the workspace's '*' default. */
export function priceOf(
  w: Pick<WorkspaceGateway, 'prices'>,
  catalog: ReadonlyMap<string, ModelPrice>,
  model: string,
): ModelPrice | undefined {
  return w.prices.get(model) ?? catalogLookup(catalog, model) ?? w.prices.get('*');
}
