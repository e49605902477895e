import { randomBytes } from 'node:crypto';
import type { Db } from '../../platform/db/db.ts';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import { newId } from '../../platform/ids.ts';
import { connectionsRepo } from './vault.connections.repo.ts';
import type { ConnectionsService } from './vault.connections.service.ts';
import type { VaultService } from './vault.service.ts';

/** What the specs use of the app. */
export type ConnectionsApp = {
  db: Pick<Db, 'tenant'>;
  modules: {
    connections: { service: Pick<ConnectionsService, 'createProvider'> };
    vault: { service: Pick<VaultService, 'encrypt'> };
  };
};
type Ctx = MatrixContext<ConnectionsApp>;

/**
 * Test-only: the role matrix of the OAuth provider and connection routes (run by
 * vault.connections.matrix.routes.test.ts, read by the coverage test). Everyone reads;
 * members and up connect; owners and admins configure providers and manage shared
 * connections. Nothing in src imports it.
 */

const ws = (c: Ctx) => `/api/workspaces/${c.workspaceId}`;
const unique = () => `o-${randomBytes(4).toString('hex')}`;

const providerInput = () => ({
  name: unique(),
  authorizationUrl: 'https://auth.example.com/authorize',
  tokenUrl: 'https://auth.example.com/token',
  clientId: 'client',
  clientSecret: 'secret',
});

const provider = async (c: Ctx) => {
  const p = await c.app.modules.connections.service.createProvider({ scope: c.ownerScope, input: providerInput() });
  return { providerId: p.id, provider: p.name };
};

/**
 * A connection stored as the callback stores one (tokens as vault ciphertext), without a
 * provider to talk to: for tests of the routes around it. The provider has no revocation
 * endpoint, so disconnecting calls nothing.
 */
export async function seedConnection(
  app: ConnectionsApp,
  input: { workspaceId: string; userId: string; providerId: string; shared?: boolean; name?: string },
): Promise<string> {
  const now = new Date();
  const id = newId('con', now);
  await app.db.tenant(input.workspaceId, async (tx) => {
    const ctx = { owner: { type: 'workspace', id: input.workspaceId }, record: id, field: 'access_token' } as const;
    await connectionsRepo.insertConnection(
      tx,
      {
        id,
        workspaceId: input.workspaceId,
        providerId: input.providerId,
        userId: input.userId,
        name: input.name ?? `seeded-${randomBytes(6).toString('hex')}`,
        shared: input.shared ?? false,
        status: 'active',
        scopes: [],
        expiresAt: null,
        createdAt: now,
        updatedAt: now,
        refreshedAt: null,
        brokenAt: null,
        refreshLeaseId: null,
        refreshLeaseUntil: null,
      },
      {
        connectionId: id,
        workspaceId: input.workspaceId,
        userId: input.userId,
        accessTokenCiphertext: await app.modules.vault.service.encrypt(
          ctx,
          `seeded-${randomBytes(8).toString('hex')}`,
          tx,
        ),
        refreshTokenCiphertext: null,
        updatedAt: now,
      },
    );
  });
  return id;
}

/** The owner's connection, shared with the workspace (so admins may manage it). */
const sharedConnection = async (c: Ctx) => {
  const { providerId } = await provider(c);
  const userId = c.ownerScope.actor.type === 'system' ? '' : c.ownerScope.actor.userId;
  const connectionId = await seedConnection(c.app, { workspaceId: c.workspaceId, userId, providerId, shared: true });
  return { connectionId };
};

const everyone = ['owner', 'admin', 'member', 'viewer'] as const;
const contributors = ['owner', 'admin', 'member'] as const;
const managers = ['owner', 'admin'] as const;

export const matrixRoutes: MatrixRoute<ConnectionsApp>[] = [
  { method: 'POST', url: (c) => `${ws(c)}/oauth-providers`, body: providerInput, allowed: managers },
  { method: 'GET', url: (c) => `${ws(c)}/oauth-providers`, allowed: everyone },
  {
    method: 'PATCH',
    setup: provider,
    url: (c) => `${ws(c)}/oauth-providers/${c.vars.providerId}`,
    body: () => ({ apiHosts: ['api.example.com'] }),
    allowed: managers,
  },
  {
    method: 'DELETE',
    setup: provider,
    url: (c) => `${ws(c)}/oauth-providers/${c.vars.providerId}`,
    allowed: managers,
  },
  {
    method: 'POST',
    setup: provider,
    url: (c) => `${ws(c)}/connections/${c.vars.provider}/authorize`,
    body: () => ({}),
    allowed: contributors,
  },
  { method: 'GET', url: (c) => `${ws(c)}/connections`, allowed: everyone },
  {
    method: 'PATCH',
    setup: sharedConnection,
    url: (c) => `${ws(c)}/connections/${c.vars.connectionId}`,
    body: () => ({ shared: false }),
    allowed: managers,
  },
  {
    method: 'DELETE',
    setup: sharedConnection,
    url: (c) => `${ws(c)}/connections/${c.vars.connectionId}`,
    allowed: managers,
  },
];
