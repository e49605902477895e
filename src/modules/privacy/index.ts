import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import type { KeysService } from '../keys/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';

export type PrivacyDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  identity: IdentityService;
  workspaces: WorkspacesService;
  keys: KeysService;
  vault: VaultService;
  mailer: Mailer;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

/**
 * Privacy: the rights of the people whose data Berth holds, carried out from the data map
 * (`src/platform/db/datamap.ts`): requests and their deadlines, restriction, objection and
 * consents, retention, export, erasure, sub-processors and the documents generated from
 * the map (the privacy notice, the record of processing, the breach register).
 *
 * Each part lives in its own `privacy.<part>.ts` files and is wired here.
 */
export function createPrivacyModule(deps: PrivacyDeps): Module<Record<string, never>> {
  void deps;
  return {
    service: {},
    dataMap: [],
    registerRoutes(_app: HttpServer) {},
    async registerJobs(_jobs: Jobs) {},
  };
}
