import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired } from '../identity/index.ts';
import {
  BreachList,
  BreachParams,
  BreachView,
  RecordBreachBody,
  UpdateBreachBody,
} from './privacy.breaches.schemas.ts';
import type { BreachesService } from './privacy.breaches.ts';

const tags = ['operator', 'privacy'];
const security = [{ session: [], csrf: [] }];

/** The breach register: platform operators only. */
export function registerBreachRoutes(app: HttpServer, { breaches }: { breaches: BreachesService }) {
  app.get(
    '/api/operator/privacy/breaches',
    {
      schema: {
        tags,
        security,
        summary: 'The breach register, newest first, with each 72-hour deadline and whether it passed unmet',
        response: { 200: BreachList },
      },
      preHandler: operatorRequired,
    },
    async () => ({ data: await breaches.list() }),
  );

  app.get(
    '/api/operator/privacy/breaches/:breachId',
    {
      schema: { tags, security, summary: 'One breach', params: BreachParams, response: { 200: BreachView } },
      preHandler: operatorRequired,
    },
    async (req) => breaches.get(req.params.breachId),
  );

  app.post(
    '/api/operator/privacy/breaches',
    {
      schema: {
        tags,
        security,
        summary: 'Record a personal data breach; the authority must be told within 72 hours of awareAt',
        body: RecordBreachBody,
        response: { 201: BreachView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) => reply.status(201).send(await breaches.record({ actor: operatorActor(req), input: req.body })),
  );

  app.patch(
    '/api/operator/privacy/breaches/:breachId',
    {
      schema: {
        tags,
        security,
        summary: 'Record when the authority and the people affected were told, and the measures taken',
        params: BreachParams,
        body: UpdateBreachBody,
        response: { 200: BreachView },
      },
      preHandler: operatorRequired,
    },
    async (req) => breaches.update({ actor: operatorActor(req), breachId: req.params.breachId, input: req.body }),
  );
}
