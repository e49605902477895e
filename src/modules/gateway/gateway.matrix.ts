import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { ProvidersService } from './gateway.providers.ts';
import type { SettingsService } from './gateway.settings.ts';

/** What the specs use of the app. */
type GatewayApp = {
  modules: {
    gateway: {
      service: {
        providers: Pick<ProvidersService, 'addProvider'>;
        settings: Pick<SettingsService, 'setPrice' | 'setRoute'>;
      };
    };
  };
};
type Ctx = MatrixContext<GatewayApp>;

/**
 * Test-only: the role matrix of the gateway's management routes (run by
 * gateway.matrix.routes.test.ts, read by the coverage test). Everyone reads providers,
 * prices, models and usage; owners and admins change them. Nothing in src imports it.
 */

const ws = (c: Ctx) => `/api/workspaces/${c.workspaceId}`;
const unique = () => `p-${randomBytes(4).toString('hex')}`;

/** A provider with an explicit model list (nothing is called upstream), fresh for each caller. */
const provider = async (c: Ctx) => {
  const p = await c.app.modules.gateway.service.providers.addProvider({
    scope: c.ownerScope,
    input: { name: unique(), adapter: 'openai-compatible', baseUrl: 'https://llm.example.com/v1', models: ['m1'] },
  });
  return { providerId: p.id };
};

const price = async (c: Ctx) => {
  const model = unique();
  await c.app.modules.gateway.service.settings.setPrice({
    scope: c.ownerScope,
    input: { model, inputMicrosPerMtok: 1, outputMicrosPerMtok: 2 },
  });
  return { model };
};

const route = async (c: Ctx) => {
  const alias = unique();
  await c.app.modules.gateway.service.settings.setRoute({
    scope: c.ownerScope,
    input: { alias, targets: [{ model: 'm1' }] },
  });
  return { alias };
};

const everyone = ['owner', 'admin', 'member', 'viewer'] as const;
const managers = ['owner', 'admin'] as const;

export const matrixRoutes: MatrixRoute<GatewayApp>[] = [
  {
    method: 'POST',
    url: (c) => `${ws(c)}/providers`,
    body: () => ({
      name: unique(),
      adapter: 'openai-compatible',
      baseUrl: 'https://llm.example.com/v1',
      models: ['m1'],
    }),
    allowed: managers,
  },
  { method: 'GET', url: (c) => `${ws(c)}/providers`, allowed: everyone },
  { method: 'GET', setup: provider, url: (c) => `${ws(c)}/providers/${c.vars.providerId}`, allowed: everyone },
  { method: 'DELETE', setup: provider, url: (c) => `${ws(c)}/providers/${c.vars.providerId}`, allowed: managers },
  { method: 'GET', url: (c) => `${ws(c)}/models`, allowed: everyone },
  {
    method: 'PUT',
    url: (c) => `${ws(c)}/model-prices`,
    body: () => ({ model: unique(), inputMicrosPerMtok: 100, outputMicrosPerMtok: 200 }),
    allowed: managers,
  },
  { method: 'GET', url: (c) => `${ws(c)}/model-prices`, allowed: everyone },
  { method: 'DELETE', setup: price, url: (c) => `${ws(c)}/model-prices/${c.vars.model}`, allowed: managers },
  {
    method: 'PUT',
    url: (c) => `${ws(c)}/routes`,
    body: () => ({ alias: unique(), strategy: 'weighted', targets: [{ model: 'm1', weight: 2 }, { model: 'm2' }] }),
    allowed: managers,
  },
  { method: 'GET', url: (c) => `${ws(c)}/routes`, allowed: everyone },
  { method: 'DELETE', setup: route, url: (c) => `${ws(c)}/routes/${c.vars.alias}`, allowed: managers },
  { method: 'GET', url: (c) => `${ws(c)}/usage`, allowed: everyone },
];
