import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { CATALOG_VERSION } from './gateway.catalog.ts';
import type { ProvidersService } from './gateway.providers.ts';
import type { UsageReports } from './gateway.reports.ts';
import {
  AddProviderBody,
  ModelList,
  PlatformProviderParams,
  PriceList,
  PriceParams,
  PriceView,
  ProviderList,
  ProviderParams,
  ProviderView,
  RouteList,
  RouteParams,
  RouteView,
  SetPriceBody,
  SetRouteBody,
  UsageAnswer,
  UsageQuery,
  WorkspaceParams,
} from './gateway.schemas.ts';
import type { GatewayService } from './gateway.service.ts';
import type { SettingsService } from './gateway.settings.ts';

type Deps = {
  providers: ProvidersService;
  settings: SettingsService;
  gateway: GatewayService;
  reports: UsageReports;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

/** Managing a workspace's providers, prices and reading its usage. */
export function registerGatewayAdminRoutes(
  app: HttpServer,
  { providers, settings, gateway, reports, requirePermission }: Deps,
) {
  const ws = '/api/workspaces/:workspaceId';

  app.post(
    `${ws}/providers`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Connect a model provider (credentials are stored encrypted and never returned)',
        params: WorkspaceParams,
        body: AddProviderBody,
        response: { 201: ProviderView },
      },
      preHandler: requirePermission('providers:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(await providers.addProvider({ scope: requireScope(req), input: req.body })),
  );

  app.get(
    `${ws}/providers`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'List providers',
        params: WorkspaceParams,
        response: { 200: ProviderList },
      },
      preHandler: requirePermission('providers:read'),
    },
    async (req) => ({ data: await providers.listProviders({ scope: requireScope(req) }) }),
  );

  app.get(
    `${ws}/providers/:providerId`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Get a provider',
        params: ProviderParams,
        response: { 200: ProviderView },
      },
      preHandler: requirePermission('providers:read'),
    },
    async (req) => providers.getProvider({ scope: requireScope(req), providerId: req.params.providerId }),
  );

  app.delete(
    `${ws}/providers/:providerId`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Remove a provider and its credentials',
        params: ProviderParams,
      },
      preHandler: requirePermission('providers:manage'),
    },
    async (req, reply) => {
      await providers.removeProvider({ scope: requireScope(req), providerId: req.params.providerId });
      return reply.status(204).send();
    },
  );

  app.get(
    `${ws}/models`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Models the workspace can call, with provider and price',
        params: WorkspaceParams,
        response: { 200: ModelList },
      },
      preHandler: requirePermission('providers:read'),
    },
    async (req) => ({
      data: await gateway.listModels(requireScope(req).workspaceId),
      catalogVersion: CATALOG_VERSION,
    }),
  );

  app.put(
    `${ws}/model-prices`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: "Set the workspace's price for a model (overrides the catalog)",
        params: WorkspaceParams,
        body: SetPriceBody,
        response: { 200: PriceView },
      },
      preHandler: requirePermission('providers:manage'),
    },
    async (req) => settings.setPrice({ scope: requireScope(req), input: req.body }),
  );

  app.get(
    `${ws}/model-prices`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: "The workspace's prices",
        params: WorkspaceParams,
        response: { 200: PriceList },
      },
      preHandler: requirePermission('providers:read'),
    },
    async (req) => ({ data: await settings.listPrices({ scope: requireScope(req) }) }),
  );

  app.delete(
    `${ws}/model-prices/:model`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: "Remove the workspace's price for a model",
        params: PriceParams,
      },
      preHandler: requirePermission('providers:manage'),
    },
    async (req, reply) => {
      await settings.removePrice({ scope: requireScope(req), model: req.params.model });
      return reply.status(204).send();
    },
  );

  app.put(
    `${ws}/routes`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Define a model alias: targets tried in order, or picked by weight with the rest as fallbacks',
        params: WorkspaceParams,
        body: SetRouteBody,
        response: { 200: RouteView },
      },
      preHandler: requirePermission('providers:manage'),
    },
    async (req) => settings.setRoute({ scope: requireScope(req), input: req.body }),
  );

  app.get(
    `${ws}/routes`,
    {
      schema: {
        tags: ['providers'],
        security,
        summary: 'Model aliases',
        params: WorkspaceParams,
        response: { 200: RouteList },
      },
      preHandler: requirePermission('providers:read'),
    },
    async (req) => ({ data: await settings.listRoutes({ scope: requireScope(req) }) }),
  );

  app.delete(
    `${ws}/routes/:alias`,
    {
      schema: { tags: ['providers'], security, summary: 'Remove a model alias', params: RouteParams },
      preHandler: requirePermission('providers:manage'),
    },
    async (req, reply) => {
      await settings.removeRoute({ scope: requireScope(req), alias: req.params.alias });
      return reply.status(204).send();
    },
  );

  const operatorTags = ['operator'];
  const operatorSecurity = [{ session: [], csrf: [] }];

  app.post(
    '/api/operator/providers',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: "Connect a provider for every workspace with the operator's credentials",
        body: AddProviderBody,
        response: { 201: ProviderView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) =>
      reply.status(201).send(await providers.addPlatformProvider({ actor: operatorActor(req), input: req.body })),
  );

  app.get(
    '/api/operator/providers',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Platform providers',
        response: { 200: ProviderList },
      },
      preHandler: operatorRequired,
    },
    async () => ({ data: await providers.listPlatformProviders() }),
  );

  app.delete(
    '/api/operator/providers/:provider',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Remove a platform provider (by id or name) and its credentials',
        params: PlatformProviderParams,
      },
      preHandler: operatorRequired,
    },
    async (req, reply) => {
      await providers.removePlatformProvider({ actor: operatorActor(req), provider: req.params.provider });
      return reply.status(204).send();
    },
  );

  app.get(
    `${ws}/usage`,
    {
      schema: {
        tags: ['usage'],
        security,
        summary: 'Usage events (newest first) or aggregates per day, model, key or provider',
        params: WorkspaceParams,
        querystring: UsageQuery,
        response: { 200: UsageAnswer },
      },
      preHandler: requirePermission('usage:read'),
    },
    async (req) => reports.queryUsage({ scope: requireScope(req), query: req.query }),
  );
}
