import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { IdentityService } from '../identity/index.ts';
import type { PrivacyService } from '../privacy/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import { analyticsRepo } from './analytics.repo.ts';
import { registerAnalyticsHooks, registerAnalyticsRoutes } from './analytics.routes.ts';
import { analyticsService } from './analytics.service.ts';
import { analyticsTables } from './analytics.tables.ts';

export { FEATURE_PATTERN, featureNames, type RouteRef, routeKey } from './analytics.features.ts';
export type { FeatureTotal } from './analytics.repo.ts';
export {
  ANALYTICS_FLUSH_MS,
  ANALYTICS_PURPOSE,
  type AnalyticsService,
  MAX_TOTAL_DAYS,
  type TotalsView,
} from './analytics.service.ts';

export type AnalyticsDeps = PlatformDeps & {
  /** Objections to `product_analytics`: from memory per request, under lock per write. */
  consents: Pick<PrivacyService['consents'], 'objecting' | 'objectingLocked'>;
  /** Restriction of processing (Art. 18): nothing is counted for a restricted user. */
  processingAllowed(userId: string): boolean;
  identity: Pick<IdentityService, 'findUserById'>;
};

/**
 * Product analytics: feature use per account and UTC day, counted in memory on every
 * replica and written in batches; an objection stops it and deletes what was counted
 * (wire `service.objectionChanged` to privacy's `onObjectionChange`). Operators see totals
 * per feature at `/api/operator/analytics/features`.
 */
export function createAnalyticsModule(deps: AnalyticsDeps) {
  const service = analyticsService({
    db: deps.db,
    repo: analyticsRepo,
    clock: deps.clock,
    logger: deps.logger,
    consents: deps.consents,
    processingAllowed: deps.processingAllowed,
    accountExists: async (tx, userId) => (await deps.identity.findUserById(userId, { tx })) !== null,
  });
  const module: Module<typeof service> = {
    service,
    dataMap: moduleDataMap('analytics', analyticsTables),
    registerRoutes(app: HttpServer) {
      registerAnalyticsHooks(app, { analytics: service });
      registerAnalyticsRoutes(app, { analytics: service });
      service.start();
      app.addHook('onClose', async () => {
        await service.stop();
      });
    },
  };
  return module;
}

export type AnalyticsModule = ReturnType<typeof createAnalyticsModule>;
