import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { requireSession, sessionRequired } from '../identity/index.ts';
import { userActor } from './privacy.requests.routes.ts';
import type { RestrictionsService } from './privacy.restrictions.ts';

export const RestrictionView = z.object({
  restricted: z.boolean(),
  since: z.string().nullable().describe('When the current restriction started'),
  history: z.array(z.object({ id: z.string(), restrictedAt: z.string(), liftedAt: z.string().nullable() })),
});

/** Restriction of processing (Art. 18) for the signed-in user. */
export function registerRestrictionRoutes(app: HttpServer, { restrictions }: { restrictions: RestrictionsService }) {
  const common = { tags: ['privacy'], security: [{ session: [], csrf: [] }] };

  app.get(
    '/api/me/privacy/restriction',
    {
      schema: {
        ...common,
        summary: 'Whether processing of your data is restricted, with the history',
        response: { 200: RestrictionView },
      },
      preHandler: sessionRequired,
    },
    async (req) => restrictions.status(requireSession(req).userId),
  );

  app.post(
    '/api/me/privacy/restriction',
    {
      schema: {
        ...common,
        summary:
          'Restrict processing of your data: your API keys are refused by the gateway (processing_restricted) and agents do not run for you; your data is kept',
        response: { 200: RestrictionView },
      },
      preHandler: sessionRequired,
    },
    async (req) => restrictions.restrict(userActor(req)),
  );

  app.delete(
    '/api/me/privacy/restriction',
    {
      schema: { ...common, summary: 'Lift the restriction: processing resumes', response: { 200: RestrictionView } },
      preHandler: sessionRequired,
    },
    async (req) => restrictions.lift(userActor(req)),
  );
}
