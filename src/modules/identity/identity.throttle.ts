import type { Config } from '../../config.ts';
import { type Clock, MINUTE } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import { identityRepo, type ThrottleKind } from './identity.repo.ts';
import type { IdentityKeys } from './identity.tokens.ts';

type Deps = { db: Db; clock: Clock; config: Config; keys: IdentityKeys };

/** An attempt counted before it was checked: kept when it fails, released when it succeeds. */
export type Reservation = { ids: number[] };

/**
 * Advisory lock classes, one per counter kind, taken in this order, so two requests never
 * wait on each other in a cycle. (pg_advisory_xact_lock(class, hashtext(key)).)
 */
const LOCK_CLASS: Record<ThrottleKind, number> = {
  account: 0x42720001,
  ip: 0x42720002,
  signup_ip: 0x42720003,
  email_address: 0x42720004,
  email_ip: 0x42720005,
};

/**
 * Throttling, shared by every replica because it lives in the database.
 *
 * - Sign-in: at most N failures per account in a window and M per IP address in another.
 *   Accounts are keyed by the typed email, so unknown and known emails are throttled alike.
 *   An attempt is *reserved* (counted) under a lock before the password or code is checked
 *   and released only when it succeeds, so N parallel guesses cannot all pass a check made
 *   before any failure was written.
 * - Sign-ups per IP, and verification / password-reset emails per address and per IP.
 *
 * Keys are HMACs (see identityKeys): the table holds no email or IP address in clear.
 */
export function loginThrottle(deps: Deps) {
  const { db, clock, config, keys } = deps;
  const repo = identityRepo;
  const emailWindowMs = config.BERTH_EMAIL_LIMIT_WINDOW_MINUTES * MINUTE;
  const limits: Record<ThrottleKind, { max: number; windowMs: number }> = {
    account: {
      max: config.BERTH_LOGIN_ACCOUNT_MAX_FAILURES,
      windowMs: config.BERTH_LOGIN_ACCOUNT_WINDOW_MINUTES * MINUTE,
    },
    ip: { max: config.BERTH_LOGIN_IP_MAX_FAILURES, windowMs: config.BERTH_LOGIN_IP_WINDOW_SECONDS * 1000 },
    signup_ip: { max: config.BERTH_SIGNUP_IP_MAX, windowMs: emailWindowMs },
    email_address: { max: config.BERTH_EMAIL_ADDRESS_MAX, windowMs: emailWindowMs },
    email_ip: { max: config.BERTH_EMAIL_IP_MAX, windowMs: emailWindowMs },
  };

  /**
   * Counts one attempt on every key, atomically: under the keys' advisory locks, refuses
   * (nothing written) when any key is at its limit, else inserts one row per key.
   */
  async function take(
    specs: Array<{ kind: ThrottleKind; value: string }>,
    refuse: (seconds: number) => AppError,
  ): Promise<number[]> {
    const now = clock.now();
    const keyed = specs
      .map((s) => ({ kind: s.kind, keyHash: keys.throttleKey(s.kind, s.value), ...limits[s.kind] }))
      .sort((a, b) => LOCK_CLASS[a.kind] - LOCK_CLASS[b.kind]);
    return db.orm.transaction(async (tx) => {
      for (const k of keyed) await repo.lockThrottleKey(tx, LOCK_CLASS[k.kind], k.keyHash);
      const waits: number[] = [];
      for (const k of keyed) {
        const { count, oldest } = await repo.failuresSince(tx, k.kind, k.keyHash, new Date(now.getTime() - k.windowMs));
        if (count < k.max) continue;
        const freeAt = (oldest ?? now).getTime() + k.windowMs;
        waits.push(Math.max(1, Math.ceil((freeAt - now.getTime()) / 1000)));
      }
      if (waits.length > 0) throw refuse(Math.max(...waits));
      const ids: number[] = [];
      for (const k of keyed) ids.push(await repo.recordFailure(tx, k.kind, k.keyHash, now));
      return ids;
    });
  }

  const tooManyAttempts = (seconds: number) =>
    new AppError('too_many_attempts', `Too many failed attempts. Try again in ${seconds} seconds.`, {
      retryAfterSeconds: seconds,
    });
  const rateLimited = (seconds: number) =>
    new AppError('rate_limited', `Too many requests. Try again in ${seconds} seconds.`, {
      retryAfterSeconds: seconds,
    });

  return {
    limits,

    /**
     * Counts a sign-in attempt (password or second factor) for the account and the IP before
     * it is checked. Throws 429 `too_many_attempts` with Retry-After when either is at its
     * limit. Keep the reservation when the attempt fails; `release` it when it succeeds.
     */
    async reserve(email: string, ip: string): Promise<Reservation> {
      return {
        ids: await take(
          [
            { kind: 'account', value: email },
            { kind: 'ip', value: ip },
          ],
          tooManyAttempts,
        ),
      };
    },

    /** The reserved attempt succeeded: it does not count. */
    async release(reservation: Reservation): Promise<void> {
      await repo.deleteFailures(db.orm, reservation.ids);
    },

    /** A complete sign-in clears the account's failures (the IP's stay). */
    async succeed(email: string): Promise<void> {
      await repo.clearFailures(db.orm, 'account', keys.throttleKey('account', email));
    },

    /** Counts a sign-up from this IP; 429 `rate_limited` with Retry-After past the limit. */
    async limitSignup(ip: string): Promise<void> {
      await take([{ kind: 'signup_ip', value: ip }], rateLimited);
    },

    /**
     * Counts an email request (verification, password reset) for the address and the IP;
     * 429 `rate_limited` past either limit. Counted alike whether or not the address has an account.
     */
    async limitEmail(address: string, ip: string): Promise<void> {
      await take(
        [
          { kind: 'email_address', value: address },
          { kind: 'email_ip', value: ip },
        ],
        rateLimited,
      );
    },

    /** Counter rows older than every window can go. */
    purgeBefore(): Date {
      const longest = Math.max(...Object.values(limits).map((l) => l.windowMs));
      return new Date(clock.now().getTime() - longest);
    },
  };
}
export type LoginThrottle = ReturnType<typeof loginThrottle>;
