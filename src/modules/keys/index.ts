// The keys module: API keys (shown once, stored as SHA-256, scoped, expiring, revocable,
// rollable), their authentication hook for /api and /v1, and the verification cache kept
// coherent across replicas through the bus. Other modules import only this file.
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { IdentityService } from '../identity/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { WorkspacesService } from '../workspaces/index.ts';
import { installKeyAuth, keyAccessResolver } from './keys.auth.ts';
import { keyCache } from './keys.cache.ts';
import { keysRepo } from './keys.repo.ts';
import { registerKeyRoutes } from './keys.routes.ts';
import { type KeysAudit, keysService } from './keys.service.ts';
import { keysTables } from './keys.tables.ts';
import { usageTracker } from './keys.usage.ts';
import { type CachedKey, KEYS_CHANNEL, keyVerifier } from './keys.verify.ts';

export { apiKeyOf, isGatewayPath, openAiError } from './keys.auth.ts';
export { generateKey, type KeyEnvironment, looksLikeKey, type ParsedKey, parseKey } from './keys.format.ts';
export type { CreateKeyInput, KeyView, KeyWithSecret, SelfView, UpdateKeyInput } from './keys.schemas.ts';
export { type KeyScope, SCOPES, scopesCover } from './keys.scopes.ts';
export type { KeysAudit } from './keys.service.ts';
export type { KeyPrincipal } from './keys.verify.ts';

/**
 * What other modules and the CLI use: `createKey`, `listKeys`, `getKey`, `updateKey`,
 * `revokeKey`, `rollKey` (each taking a `scope`), `verifyKey`, `flushUsage`, `clearCache`.
 *
 * @example
 * const { key, secret } = await keys.createKey({ scope, input: { name: 'CI', scopes: ['gateway:invoke'] } });
 */
export type KeysService = ReturnType<typeof keysService>;

export type KeysDeps = PlatformDeps & {
  workspaces: Pick<
    WorkspacesService,
    'resolveMembership' | 'lockMemberRole' | 'onEvent' | 'registerAccessResolver' | 'requirePermission'
  >;
  /** The creator's account status and 2FA state; disabled accounts' keys stop at once. */
  identity: Pick<IdentityService, 'findUserById' | 'onUserDisabled'>;
  audit: KeysAudit;
};

/**
 * Builds the keys module. Its routes must be registered before identity's: the key hook
 * has to run before the session hook so a request with a key is never a cookie session.
 */
export function createKeysModule(deps: KeysDeps): Module<KeysService> {
  const cache = keyCache<CachedKey>({ clock: deps.clock });
  const usage = usageTracker({
    clock: deps.clock,
    write: (entries) => deps.db.system((tx) => keysRepo.touchLastUsed(tx, entries)),
    onError: () => deps.logger.warn('keys: could not record when keys were last used'),
  });
  const verifier = keyVerifier({
    db: deps.db,
    repo: keysRepo,
    clock: deps.clock,
    logger: deps.logger,
    members: deps.workspaces,
    users: deps.identity,
    cache,
    usage,
    publish: (inv) => deps.bus.publish(KEYS_CHANNEL, JSON.stringify(inv)),
  });
  const service = keysService({
    db: deps.db,
    repo: keysRepo,
    clock: deps.clock,
    audit: deps.audit,
    members: deps.workspaces,
    usage,
    verifier,
    env: deps.config.BERTH_KEY_ENVIRONMENT,
  });
  deps.workspaces.onEvent(service.onWorkspaceEvent);
  deps.workspaces.registerAccessResolver('api_key', keyAccessResolver(deps.workspaces));
  deps.identity.onUserDisabled((userId) => service.forgetUser(userId));

  return {
    service,
    dataMap: moduleDataMap('keys', keysTables),
    async registerRoutes(app: HttpServer) {
      const unsubscribe = await deps.bus.subscribe(KEYS_CHANNEL, service.applyInvalidation, service.clearCache);
      usage.start();
      app.addHook('onClose', async () => {
        await unsubscribe().catch(() => undefined);
        await usage.stop();
      });
      installKeyAuth(app, service);
      registerKeyRoutes(app, { service, requirePermission: deps.workspaces.requirePermission });
    },
  };
}
