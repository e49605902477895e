import { z } from 'zod';
import type { Config } from '../../config.ts';
import { type Clock, MINUTE } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Mailer, MailMessage } from '../notifications/index.ts';
import { emailFlows } from './identity.email.ts';
import { signInFlows } from './identity.login.ts';
import type { MfaService } from './identity.mfa.ts';
import { assertPasswordAcceptable, hashPassword } from './identity.passwords.ts';
import { identityRepo, type UserRow } from './identity.repo.ts';
import { sessionsService } from './identity.sessions.ts';
import type { LoginThrottle } from './identity.throttle.ts';
import type { IdentityKeys } from './identity.tokens.ts';

/** A user as the API and other modules see it (never the password hash). */
export type PublicUser = {
  id: string;
  email: string;
  displayName: string | null;
  status: 'active' | 'disabled' | 'closing';
  isOperator: boolean;
  emailVerified: boolean;
  mfaEnabled: boolean;
  createdAt: string;
};

export type PublicSession = {
  id: string;
  createdAt: string;
  lastSeenAt: string;
  idleExpiresAt: string;
  absoluteExpiresAt: string;
  ip: string | null;
  userAgent: string | null;
};

/** A session just issued: the token goes into the cookie and nowhere else. */
export type IssuedSession = { sessionId: string; token: string; csrfToken: string; absoluteExpiresAt: Date };

export type SecurityEventInput = {
  type: string;
  userId?: string | null;
  meta?: Partial<RequestMeta>;
  details?: Record<string, string | number | boolean | null>;
};

export type LoginResult =
  | { kind: 'session'; user: PublicUser; session: IssuedSession }
  | { kind: 'mfa'; challengeToken: string };

/** Sessions are touched (last seen, idle expiry slid) at most once per this interval. */
export const SESSION_TOUCH_INTERVAL_MS = MINUTE;
export const CHALLENGE_TTL_MS = 5 * MINUTE;
export const CHALLENGE_MAX_ATTEMPTS = 5;

const emailSchema = z.email().max(254);

/** Emails are stored trimmed and lower-case: one address, one account. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export type IdentityDeps = {
  db: Db;
  clock: Clock;
  config: Config;
  logger: Logger;
  mailer: Mailer;
  keys: IdentityKeys;
  throttle: LoginThrottle;
  mfa: MfaService;
  jobs: Pick<Jobs, 'send'>;
};

/**
 * What every part of the identity module shares: users as the API shows them, security
 * events, throttled proofs and mail that never fails its caller.
 */
function identityBase(deps: IdentityDeps) {
  const { db, clock, logger, mailer, throttle, mfa } = deps;
  const repo = identityRepo;

  async function toPublicUser(row: UserRow, tx: Database = db.orm): Promise<PublicUser> {
    return {
      id: row.id,
      email: row.email,
      displayName: row.displayName,
      status: row.status,
      isOperator: row.isOperator,
      emailVerified: row.emailVerifiedAt !== null,
      mfaEnabled: await mfa.isEnabled(row.id, tx),
      createdAt: row.createdAt.toISOString(),
    };
  }

  async function mustUser(id: string): Promise<UserRow> {
    const row = isId(id, 'usr') ? await repo.userById(db.orm, id) : null;
    if (!row) throw new AppError('not_found', 'No such user.');
    return row;
  }

  /** Records a security event; in the caller's transaction `tx` when given. */
  async function recordSecurityEvent(e: SecurityEventInput, tx: Database = db.orm): Promise<void> {
    const now = clock.now();
    await repo.insertSecurityEvent(tx, {
      id: newId('sev', now),
      userId: e.userId ?? null,
      type: e.type,
      ip: e.meta?.ip ?? null,
      userAgent: e.meta?.userAgent?.slice(0, 512) ?? null,
      details: e.details ?? {},
      createdAt: now,
    });
  }

  /**
   * Runs one proof (password, TOTP code, recovery code) through the sign-in throttle: the
   * attempt is counted before `verify` runs and uncounted only when it succeeds. A refusal
   * (429) is recorded as a `login_throttled` security event.
   */
  async function throttledProof(
    subject: { email: string; userId: string | null },
    meta: RequestMeta,
    action: string,
    verify: () => Promise<boolean>,
  ): Promise<boolean> {
    let reservation: Awaited<ReturnType<LoginThrottle['reserve']>>;
    try {
      reservation = await throttle.reserve(subject.email, meta.ip);
    } catch (err) {
      if (err instanceof AppError && err.code === 'too_many_attempts') {
        await recordSecurityEvent({
          type: 'login_throttled',
          userId: subject.userId,
          meta,
          details: { action, retryAfterSeconds: err.extra.retryAfterSeconds ?? null },
        });
      }
      throw err;
    }
    const ok = await verify();
    if (ok) await throttle.release(reservation);
    return ok;
  }

  /** Sends without failing the caller: a mail outage must not block sign-up; it is logged by tag only. */
  async function sendMail(message: MailMessage): Promise<void> {
    try {
      await mailer.send(message);
    } catch (err) {
      logger.warn({ tag: message.tag, err: (err as Error)?.name ?? 'error' }, 'mail not sent');
    }
  }

  /** Forgets stored copies of a used token's email (the outbox); never fails the caller. */
  async function retractMail(ref: string): Promise<void> {
    try {
      await mailer.retract?.(ref);
    } catch (err) {
      logger.warn({ err: (err as Error)?.name ?? 'error' }, 'mail not retracted');
    }
  }

  async function createUserRow(
    input: {
      email: string;
      password: string;
      displayName?: string | null;
      isOperator?: boolean;
      emailVerified?: boolean;
    },
    tx: Database = db.orm,
  ): Promise<UserRow> {
    const email = normalizeEmail(input.email);
    if (!emailSchema.safeParse(email).success) {
      throw new AppError('validation_failed', 'The email address is not valid.', {
        details: [{ path: '/email', message: 'invalid email' }],
      });
    }
    assertPasswordAcceptable(input.password);
    const now = clock.now();
    const row = {
      id: newId('usr', now),
      email,
      displayName: input.displayName ?? null,
      passwordHash: await hashPassword(input.password),
      status: 'active' as const,
      isOperator: input.isOperator ?? false,
      emailVerifiedAt: input.emailVerified ? now : null,
      passwordChangedAt: now,
      createdAt: now,
      updatedAt: now,
    };
    if (!(await repo.insertUser(tx, row))) {
      throw new AppError('email_taken', 'An account with this email address already exists.');
    }
    return row;
  }

  return {
    toPublicUser,
    mustUser,
    recordSecurityEvent,
    throttledProof,
    sendMail,
    retractMail,
    createUserRow,
  };
}
export type IdentityBase = ReturnType<typeof identityBase>;

/**
 * The identity module's use cases, assembled from its parts: accounts (here), sessions
 * (identity.sessions.ts), sign-up, sign-in and passwords (identity.login.ts) and the email
 * flows (identity.email.ts).
 */
export function identityService(deps: IdentityDeps) {
  const { db, clock, throttle } = deps;
  const repo = identityRepo;
  const base = identityBase(deps);
  const sessions = sessionsService({ ...deps, base });
  const email = emailFlows({ ...deps, base });
  const signIn = signInFlows({ ...deps, base, sessions, email });

  return {
    normalizeEmail,
    recordSecurityEvent: base.recordSecurityEvent,
    toPublicUser: base.toPublicUser,
    mustUser: base.mustUser,
    throttledProof: base.throttledProof,
    ...sessions.api,
    ...email.api,
    ...signIn,

    /**
     * Creates an account (CLI `berth admin create`, sign-up). Validates the password rules;
     * `email_taken` when the address is in use. With `tx`, the user and its security event
     * are written in the caller's transaction (first-run setup), committing with it.
     *
     * @example await identity.createUser({ email: 'ada@example.com', password, isOperator: true });
     */
    async createUser(
      input: Parameters<IdentityBase['createUserRow']>[0],
      opts: { tx?: Database } = {},
    ): Promise<{ id: string; email: string }> {
      const tx = opts.tx ?? db.orm;
      const row = await base.createUserRow(input, tx);
      await base.recordSecurityEvent(
        {
          type: 'account_created',
          userId: row.id,
          details: { operator: row.isOperator },
        },
        tx,
      );
      return { id: row.id, email: row.email };
    },

    /** The user, or null; read in the caller's transaction `tx` when given. */
    async findUserById(id: string, opts: { tx?: Database } = {}): Promise<PublicUser | null> {
      const tx = opts.tx ?? db.orm;
      const row = isId(id, 'usr') ? await repo.userById(tx, id) : null;
      return row ? base.toPublicUser(row, tx) : null;
    },

    async findUserByEmail(address: string): Promise<PublicUser | null> {
      const row = await repo.userByEmail(db.orm, normalizeEmail(address));
      return row ? base.toPublicUser(row) : null;
    },

    async me(auth: SessionAuth): Promise<PublicUser> {
      return base.toPublicUser(await base.mustUser(auth.userId));
    },

    async updateMe(auth: SessionAuth, patch: { displayName?: string | null }): Promise<PublicUser> {
      const row = await repo.updateUser(db.orm, auth.userId, {
        ...(patch.displayName !== undefined ? { displayName: patch.displayName } : {}),
        updatedAt: clock.now(),
      });
      if (!row) throw new AppError('not_found', 'No such user.');
      return base.toPublicUser(row);
    },

    /** The password-reset mail job's handler (registered by the module). */
    deliverPasswordReset: email.deliverPasswordReset,

    async listSecurityEvents(userId: string, limit = 100) {
      return repo.securityEventsForUser(db.orm, userId, limit);
    },

    /** Deletes expired sessions, spent tokens and challenges and old throttling rows. */
    async purgeExpired() {
      return repo.purgeExpired(db.orm, clock.now(), throttle.purgeBefore());
    },
  };
}
export type IdentityCore = ReturnType<typeof identityService>;
