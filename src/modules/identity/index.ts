// The identity module: accounts, sessions, CSRF, TOTP two-factor, login throttling,
// security events and platform operators. Other modules import only this file.
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { AuditService } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { Keyring, VaultService } from '../vault/index.ts';
import { installAuth } from './identity.auth.ts';
import { deletionUseCases } from './identity.deletion.ts';
import { PASSWORD_RESET_MAIL_JOB, type PasswordResetMailJob } from './identity.email.ts';
import { mfaService, mfaUseCases } from './identity.mfa.ts';
import { operatorsService } from './identity.operators.ts';
import { prepareDummyHash } from './identity.passwords.ts';
import { registerIdentityRoutes } from './identity.routes.ts';
import { identityService } from './identity.service.ts';
import { identityTables } from './identity.tables.ts';
import { loginThrottle } from './identity.throttle.ts';
import { identityKeys } from './identity.tokens.ts';

export {
  operatorActor,
  operatorRequired,
  requestMeta,
  requireOperator,
  requireSession,
  sessionCookieName,
  sessionRequired,
} from './identity.auth.ts';
export { PASSWORD_RESET_MAIL_JOB } from './identity.email.ts';
export { ARGON2_PARAMS, passwordProblem } from './identity.passwords.ts';
export type {
  IssuedSession,
  LoginResult,
  PublicSession,
  PublicUser,
  SecurityEventInput,
} from './identity.service.ts';
export { normalizeEmail } from './identity.service.ts';
export { totpCodeAt } from './identity.totp.ts';

/**
 * What other modules and the CLI use: `createUser`, `findUserById`, `findUserByEmail`,
 * `recordSecurityEvent`, `countOperators` (all operators: was this install set up?),
 * `countActiveOperators` (never allowed to reach 0), and the rest of the use cases behind
 * the routes. The module also runs PASSWORD_RESET_MAIL_JOB (reset links are mailed off the
 * request path).
 *
 * @example const { id } = await identity.createUser({ email, password, isOperator: true, emailVerified: true });
 */
export type IdentityService = ReturnType<typeof identityService> &
  ReturnType<typeof mfaUseCases> &
  ReturnType<typeof deletionUseCases> &
  ReturnType<typeof operatorsService> & {
    /**
     * Calls `handler` after an account is disabled (its sessions are already ended), so
     * other modules stop what the account could still use (its API keys). A failing
     * handler is logged; the others still run.
     *
     * @example identity.onUserDisabled((userId) => keys.forgetUser(userId));
     */
    onUserDisabled(handler: (userId: string) => Promise<void> | void): void;
  };

export const IDENTITY_PURGE_JOB = 'identity.purge-expired';

export function createIdentityModule(
  deps: PlatformDeps & {
    vault: VaultService;
    mailer: Mailer;
    keyring?: Keyring;
    /** Operator actions are recorded in the platform audit chain. */
    audit: Pick<AuditService, 'record'>;
  },
): Module<IdentityService> {
  if (!('keyring' in deps) || !deps.keyring) throw new Error('identity needs the keyring (CSRF and throttling keys)');
  const keys = identityKeys(deps.keyring);
  const throttle = loginThrottle({ db: deps.db, clock: deps.clock, config: deps.config, keys });
  const mfa = mfaService({ db: deps.db, clock: deps.clock, vault: deps.vault });
  const core = identityService({
    db: deps.db,
    clock: deps.clock,
    config: deps.config,
    logger: deps.logger,
    mailer: deps.mailer,
    keys,
    throttle,
    mfa,
    jobs: deps.jobs,
  });
  const disabledHandlers: Array<(userId: string) => Promise<void> | void> = [];
  const userDisabled = async (userId: string) => {
    for (const h of disabledHandlers) {
      try {
        await h(userId);
      } catch {
        deps.logger.warn('identity: a handler of a disabled account failed');
      }
    }
  };
  const service: IdentityService = {
    ...core,
    ...mfaUseCases({ mfa, core }),
    ...operatorsService({ db: deps.db, clock: deps.clock, core, audit: deps.audit, userDisabled }),
    ...deletionUseCases({ db: deps.db, clock: deps.clock, mfa, core, userDisabled }),
    onUserDisabled(handler) {
      disabledHandlers.push(handler);
    },
  };
  return {
    service,
    dataMap: moduleDataMap('identity', identityTables),
    async registerRoutes(app: HttpServer) {
      void prepareDummyHash().catch(() => undefined);
      await installAuth(app, { core: service, publicUrl: deps.config.publicUrl });
      registerIdentityRoutes(app, { core: service, publicUrl: deps.config.publicUrl, clock: deps.clock });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register(IDENTITY_PURGE_JOB, async () => {
        await service.purgeExpired();
      });
      await jobs.register<PasswordResetMailJob>(PASSWORD_RESET_MAIL_JOB, (data) => service.deliverPasswordReset(data), {
        retryLimit: 3,
        retryDelaySeconds: 30,
        expireInSeconds: 120,
      });
      await jobs.schedule(IDENTITY_PURGE_JOB, '17 * * * *');
    },
  };
}
