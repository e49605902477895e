import type { Config } from '../../config.ts';
import { type Clock, MINUTE } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import { identityRepo } from './identity.repo.ts';
import type { IdentityKeys } from './identity.tokens.ts';

type Deps = { db: Db; clock: Clock; config: Config; keys: IdentityKeys };

/**
 * Sign-in throttling, shared by every replica because it lives in the database: at most
 * N failures per account in a window and M per IP address in another. Accounts are keyed
 * by the typed email, so unknown and known emails are throttled alike. Keys are HMACs:
 * the table holds no email or IP address in clear.
 */
export function loginThrottle(deps: Deps) {
  const { db, clock, config, keys } = deps;
  const limits = {
    account: {
      max: config.BERTH_LOGIN_ACCOUNT_MAX_FAILURES,
      windowMs: config.BERTH_LOGIN_ACCOUNT_WINDOW_MINUTES * MINUTE,
    },
    ip: { max: config.BERTH_LOGIN_IP_MAX_FAILURES, windowMs: config.BERTH_LOGIN_IP_WINDOW_SECONDS * 1000 },
  } as const;

  async function retryAfter(kind: 'account' | 'ip', value: string): Promise<number | null> {
    const now = clock.now();
    const { max, windowMs } = limits[kind];
    const { count, oldest } = await identityRepo.failuresSince(
      db.orm,
      kind,
      keys.throttleKey(kind, value),
      new Date(now.getTime() - windowMs),
    );
    if (count < max) return null;
    const freeAt = (oldest ?? now).getTime() + windowMs;
    return Math.max(1, Math.ceil((freeAt - now.getTime()) / 1000));
  }

  return {
    limits,
    /** Throws 429 `too_many_attempts` with Retry-After when the account or the IP is over its limit. */
    async check(email: string, ip: string): Promise<void> {
      const waits = [await retryAfter('account', email), await retryAfter('ip', ip)].filter(
        (w): w is number => w !== null,
      );
      if (waits.length > 0) {
        const seconds = Math.max(...waits);
        throw new AppError('too_many_attempts', `Too many failed sign-in attempts. Try again in ${seconds} seconds.`, {
          retryAfterSeconds: seconds,
        });
      }
    },
    async fail(email: string, ip: string): Promise<void> {
      const now = clock.now();
      await identityRepo.recordFailure(db.orm, 'account', keys.throttleKey('account', email), now);
      await identityRepo.recordFailure(db.orm, 'ip', keys.throttleKey('ip', ip), now);
    },
    /** A successful sign-in clears the account's failures (the IP's stay). */
    async succeed(email: string): Promise<void> {
      await identityRepo.clearFailures(db.orm, 'account', keys.throttleKey('account', email));
    },
    /** Failures older than every window can go. */
    purgeBefore(): Date {
      return new Date(clock.now().getTime() - Math.max(limits.account.windowMs, limits.ip.windowMs));
    },
  };
}
export type LoginThrottle = ReturnType<typeof loginThrottle>;
