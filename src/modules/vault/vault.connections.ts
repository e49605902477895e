import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { Database } from '../../platform/db/db.ts';
import { egressGuard } from '../../platform/http/egress.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { AuditInput } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { Permission, WorkspacesService } from '../workspaces/index.ts';
import { oauthHttp } from './vault.connections.oauth.ts';
import { connectionsRepo } from './vault.connections.repo.ts';
import { registerConnectionsRoutes } from './vault.connections.routes.ts';
import { type ConnectionsService, connectionsService } from './vault.connections.service.ts';
import { connectionsTables } from './vault.connections.tables.ts';
import type { VaultService } from './vault.service.ts';

export type ConnectionsModuleDeps = PlatformDeps & {
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  mailer: Mailer;
  /** The connection owner's address (identity's `findUserById`). */
  findUser(userId: string): Promise<{ email: string } | null>;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
  /** A removed member's connections, and a deleted workspace's, are revoked and deleted on its events. */
  workspaces: Pick<WorkspacesService, 'onEvent'>;
};

/**
 * OAuth connections, part of the vault (they are its tokens): built after identity and
 * workspaces, which it needs for mail and permissions. Its tables are the vault's in the map.
 *
 * @example
 * const connections = createConnectionsModule({ ...deps, vault, audit, mailer, findUser, requirePermission });
 * const { accessToken } = await connections.service.accessToken(connectionId, { workspaceId, userId });
 */
export function createConnectionsModule(deps: ConnectionsModuleDeps): Module<ConnectionsService> {
  const egress = egressGuard(deps.config.BERTH_EGRESS_ALLOW);
  const service = connectionsService({
    db: deps.db,
    repo: connectionsRepo,
    clock: deps.clock,
    logger: deps.logger,
    vault: deps.vault,
    audit: deps.audit,
    http: oauthHttp({ egress }),
    egress,
    publicUrl: deps.config.publicUrl,
    mailer: deps.mailer,
    findUser: deps.findUser,
  });
  deps.workspaces.onEvent(service.onWorkspaceEvent);
  return {
    service,
    dataMap: moduleDataMap('vault', connectionsTables),
    registerRoutes(app: HttpServer) {
      registerConnectionsRoutes(app, {
        connections: service,
        publicUrl: deps.config.publicUrl,
        requirePermission: deps.requirePermission,
      });
      app.addHook('onClose', async () => {
        await service.close().catch(() => undefined);
      });
    },
  };
}
