import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorRequired } from '../identity/index.ts';
import type { RouteRef } from './analytics.features.ts';
import type { AnalyticsService } from './analytics.service.ts';

const Day = z.string().max(10).describe('A UTC day, YYYY-MM-DD');

const TotalsQuery = z.strictObject({
  from: Day.optional().describe('First day (default: 29 days before `to`)'),
  to: Day.optional().describe('Last day, included (default: today, UTC)'),
});

const TotalsView = z.object({
  from: z.string(),
  to: z.string(),
  features: z.array(
    z.object({
      feature: z.string().describe('A name derived from the route, e.g. keys.create or gateway.chat'),
      uses: z.number().int().describe('Successful requests to it in the range (0: a feature nobody used)'),
      accounts: z.number().int().describe('How many accounts used it (who is never shown)'),
    }),
  ),
});

/**
 * Counting: a hook notes every route as it is added (so this must run before the other
 * modules' routes) and names them once the server is ready; each answered request of a
 * signed-in user or an API key is counted under its route's name. Failed requests (4xx,
 * 5xx), anonymous ones and other routes than `/api` and `/v1` are not counted.
 */
export function registerAnalyticsHooks(app: HttpServer, { analytics }: { analytics: AnalyticsService }) {
  const routes: RouteRef[] = [];
  app.addHook('onRoute', (opts) => {
    for (const method of [opts.method].flat()) routes.push({ method, url: opts.url });
  });
  app.addHook('onReady', async () => {
    analytics.nameRoutes(routes);
  });
  // Callback style: the gateway's every call passes here, and an async hook costs a promise.
  app.addHook('onResponse', (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    const auth = req.auth;
    const url = req.routeOptions.url;
    if (reply.statusCode < 400 && url && auth && auth.kind !== 'anonymous') {
      const feature = analytics.featureOf(req.method, url);
      if (feature) analytics.count(auth.userId, feature);
    }
    done();
  });
}

/** Operators' totals per feature (platform operators only). */
export function registerAnalyticsRoutes(app: HttpServer, { analytics }: { analytics: AnalyticsService }) {
  app.get(
    '/api/operator/analytics/features',
    {
      schema: {
        tags: ['operator'],
        security: [{ session: [], csrf: [] }],
        summary: 'Feature use per feature over a range of days: uses and accounts, never who',
        querystring: TotalsQuery,
        response: { 200: TotalsView },
      },
      preHandler: operatorRequired,
    },
    async (req) => {
      // This replica's counts so far are part of the answer.
      await analytics.flush();
      return analytics.totals(req.query);
    },
  );
}
