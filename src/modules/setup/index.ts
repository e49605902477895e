import { z } from 'zod';
import type { Db } from '../../platform/db/db.ts';
import { requestMeta } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { Module } from '../types.ts';
import type { WorkspacesService } from '../workspaces/index.ts';
import { FirstAdminInput, type SetupService, setupService } from './setup.service.ts';

export type { SetupService };

const SetupBody = FirstAdminInput.extend({ token: z.string().min(1).max(200) });
const SetupReply = z.object({
  userId: z.string(),
  email: z.string(),
  workspaceId: z.string(),
  workspaceName: z.string(),
  apiKey: z.string().describe('An API key with every scope for the new workspace: shown this once'),
});

/** First-run setup: `berth admin create` and the one-time setup token. Owns no tables. */
export function createSetupModule(deps: {
  db: Db;
  audit: Pick<AuditService, 'record'>;
  identity: IdentityService;
  workspaces: WorkspacesService;
  keys: Pick<KeysService, 'createKey'>;
}): Module<SetupService> {
  const service = setupService(deps);
  return {
    service,
    dataMap: [],
    registerRoutes(app: HttpServer) {
      app.post(
        '/api/setup',
        {
          schema: {
            tags: ['setup'],
            summary: 'Create the first administrator with the setup token printed at start-up',
            body: SetupBody,
            response: { 201: SetupReply },
          },
        },
        async (req, reply) => reply.status(201).send(await service.completeSetup(req.body, requestMeta(req))),
      );
    },
  };
}
