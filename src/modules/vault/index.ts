// The vault module: AES-256-GCM envelope encryption with per-owner data keys wrapped by a
// versioned key-encryption key (KEK), KEK rotation and crypto-shredding.
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { Keyring } from './vault.keyring.ts';
import { createVaultService, type VaultService } from './vault.service.ts';
import { vaultTables } from './vault.tables.ts';

// OAuth connections (built after identity and workspaces: see vault.connections.ts).
export type { ConnectionView, OAuthProviderView } from './vault.connections.schemas.ts';
export type { AccessToken, ConnectionsService } from './vault.connections.service.ts';
export { type ConnectionsModuleDeps, createConnectionsModule } from './vault.connections.ts';
export {
  canonicalContext,
  type VaultContext,
  VaultError,
  type VaultErrorReason,
  type VaultOwner,
} from './vault.crypto.ts';
export {
  addKekVersion,
  formatKeyring,
  generateKek,
  type Keyring,
  keyringFilePath,
  type LoadedKeyring,
  loadKeyring,
  parseKeyring,
  removeKekVersion,
} from './vault.keyring.ts';
export { isPseudonym, PSEUDONYM_PREFIX, pseudonymizer } from './vault.pseudonyms.ts';
export { createVaultService, VAULT_CHANNEL, type VaultService, type VaultServiceDeps } from './vault.service.ts';

/**
 * The vault as a module. Other modules receive `VaultService`:
 *
 * @example
 * const ctx = { owner: { type: 'user', id: user.id }, record: factor.id, field: 'totp_secret' } as const;
 * const stored = await vault.encrypt(ctx, secret, tx);
 * const secret = (await vault.decrypt(ctx, stored, tx)).toString('utf8');
 * await vault.destroyOwnerKey({ type: 'workspace', id: workspaceId }, tx); // crypto-shredding
 */
export function createVaultModule(deps: PlatformDeps & { keyring: Keyring }): Module<VaultService> {
  const service = createVaultService({
    db: deps.db,
    keyring: deps.keyring,
    clock: deps.clock,
    logger: deps.logger,
    bus: deps.bus,
  });
  return {
    service,
    dataMap: moduleDataMap('vault', vaultTables),
    // Every replica builds the HTTP app, so every replica hears destroyed keys.
    async registerRoutes(app: HttpServer) {
      const unsubscribe = await service.follow();
      app.addHook('onClose', async () => {
        await unsubscribe().catch(() => undefined);
      });
    },
  };
}
