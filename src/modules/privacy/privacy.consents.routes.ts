import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { requireSession, sessionRequired } from '../identity/index.ts';
import { CONSENT_PURPOSE_NAMES, OBJECTION_PURPOSE_NAMES } from './privacy.consents.tables.ts';
import type { ConsentsService } from './privacy.consents.ts';
import { userActor } from './privacy.requests.routes.ts';

const ConsentsView = z.object({
  consents: z.array(
    z.object({
      purpose: z.enum(CONSENT_PURPOSE_NAMES),
      description: z.string(),
      given: z.boolean(),
      textVersion: z.string().nullable().describe('The version of the text the consent was given (or withdrawn) to'),
      since: z.string().nullable(),
    }),
  ),
  history: z.array(
    z.object({
      id: z.string(),
      purpose: z.string(),
      given: z.boolean(),
      textVersion: z.string().nullable(),
      at: z.string(),
    }),
  ),
});
const ConsentParams = z.strictObject({ purpose: z.enum(CONSENT_PURPOSE_NAMES) });
const GiveBody = z.strictObject({
  textVersion: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : -')
    .describe('The version of the consent text the user was shown (e.g. 2026-01)'),
});

const ObjectionsView = z.object({
  objections: z.array(
    z.object({
      purpose: z.enum(OBJECTION_PURPOSE_NAMES),
      description: z.string(),
      objected: z.boolean(),
      since: z.string().nullable(),
    }),
  ),
  history: z.array(z.object({ id: z.string(), purpose: z.string(), objected: z.boolean(), at: z.string() })),
});
const ObjectionsBody = z.strictObject({
  objections: z
    .partialRecord(z.enum(OBJECTION_PURPOSE_NAMES), z.boolean())
    .describe('true objects to a purpose, false withdraws the objection; purposes left out are unchanged'),
});

/** Consents and objections of the signed-in user, each change kept with its time. */
export function registerConsentRoutes(app: HttpServer, { consents }: { consents: ConsentsService }) {
  const common = { tags: ['privacy'], security: [{ session: [], csrf: [] }] };
  const ownChoice = {
    audit: { exempt: 'own privacy choice: each change is kept, with its time, in its own history table' },
  };

  app.get(
    '/api/me/privacy/consents',
    {
      schema: {
        ...common,
        summary: 'Your consents, and every time you gave or withdrew one',
        response: { 200: ConsentsView },
      },
      preHandler: sessionRequired,
    },
    async (req) => consents.consents(requireSession(req).userId),
  );

  app.post(
    '/api/me/privacy/consents/:purpose',
    {
      config: ownChoice,
      schema: {
        ...common,
        summary: 'Give consent to a purpose (e.g. marketing_email), to the text version you were shown',
        params: ConsentParams,
        body: GiveBody,
        response: { 200: ConsentsView },
      },
      preHandler: sessionRequired,
    },
    async (req) => consents.give(userActor(req), req.params.purpose, req.body.textVersion),
  );

  app.delete(
    '/api/me/privacy/consents/:purpose',
    {
      config: ownChoice,
      schema: {
        ...common,
        summary: 'Withdraw a consent (one call)',
        params: ConsentParams,
        response: { 200: ConsentsView },
      },
      preHandler: sessionRequired,
    },
    async (req) => consents.withdraw(userActor(req), req.params.purpose),
  );

  app.get(
    '/api/me/privacy/objections',
    {
      schema: {
        ...common,
        summary:
          'Your objections to processing on legitimate interest (product analytics, service improvement), with history',
        response: { 200: ObjectionsView },
      },
      preHandler: sessionRequired,
    },
    async (req) => consents.objections(requireSession(req).userId),
  );

  app.put(
    '/api/me/privacy/objections',
    {
      config: ownChoice,
      schema: {
        ...common,
        summary: 'Object to a purpose (true) or withdraw the objection (false)',
        body: ObjectionsBody,
        response: { 200: ObjectionsView },
      },
      preHandler: sessionRequired,
    },
    async (req) => consents.setObjections(userActor(req), req.body.objections),
  );
}
