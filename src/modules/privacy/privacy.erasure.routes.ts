import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { requestMeta, requireSession, sessionRequired } from '../identity/index.ts';
import type { ErasureService } from './privacy.erasure.service.ts';

export const DeletionView = z.object({
  id: z.string(),
  status: z.enum(['scheduled', 'cancelled', 'erased']),
  requestedAt: z.string(),
  eraseAfter: z.string().describe('When the account is erased; the emailed link cancels the deletion until then'),
  requestId: z.string().nullable().describe('The privacy request (type erasure) that tracks the deletion'),
});

export const DeletionRequest = z.object({
  password: z.string().max(1024).optional().describe('Your current password (required)'),
  code: z
    .string()
    .max(64)
    .optional()
    .describe('A code from your authenticator app (required when two-factor authentication is on)'),
});

export const CancelDeletionRequest = z.object({
  token: z.string().max(128).describe('The token of the cancel link emailed when the deletion was requested'),
});

/**
 * Account deletion. Both routes change only the caller's own account: they are recorded as
 * the account's security events and as a privacy request; the erasure itself writes
 * `account.erased` to the platform audit chain.
 */
export function registerErasureRoutes(app: HttpServer, { erasure }: { erasure: ErasureService }) {
  const audit = { audit: { exempt: 'own account: recorded as a security event and a privacy request' } };

  app.post(
    '/api/me/deletion',
    {
      config: audit,
      schema: {
        tags: ['privacy'],
        security: [{ session: [], csrf: [] }],
        summary:
          'Delete your account: it is closed at once (sessions, API keys and 2FA end) and erased after 30 days; a link to cancel is emailed',
        body: DeletionRequest,
        response: { 202: z.object({ deletion: DeletionView }) },
      },
      preHandler: sessionRequired,
    },
    async (req, reply) => {
      const deletion = await erasure.requestDeletion(requireSession(req), req.body, requestMeta(req));
      return reply.status(202).send({ deletion });
    },
  );

  app.post(
    '/api/privacy/deletion/cancel',
    {
      config: audit,
      schema: {
        tags: ['privacy'],
        summary: 'Cancel a scheduled account deletion with the emailed link; the account can sign in again',
        body: CancelDeletionRequest,
        response: { 200: z.object({ deletion: DeletionView }) },
      },
    },
    async (req) => ({ deletion: await erasure.cancelDeletion(req.body.token, requestMeta(req)) }),
  );
}
