import { HOUR, MINUTE } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import type { RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import { isId, newId } from '../../platform/ids.ts';
import { identityRepo, type SessionRow } from './identity.repo.ts';
import {
  type IdentityBase,
  type IdentityDeps,
  type IssuedSession,
  type PublicSession,
  SESSION_TOUCH_INTERVAL_MS,
} from './identity.service.ts';
import { hashToken, looksLikeToken, newSessionToken } from './identity.tokens.ts';

type Deps = Pick<IdentityDeps, 'db' | 'clock' | 'config' | 'keys'> & {
  base: Pick<IdentityBase, 'recordSecurityEvent'>;
};

const toPublicSession = (s: SessionRow): PublicSession => ({
  id: s.id,
  createdAt: s.createdAt.toISOString(),
  lastSeenAt: s.lastSeenAt.toISOString(),
  idleExpiresAt: s.idleExpiresAt.toISOString(),
  absoluteExpiresAt: s.absoluteExpiresAt.toISOString(),
  ip: s.ip,
  userAgent: s.userAgent,
});

/** Browser sessions: issuing, resolving a cookie, CSRF tokens, listing and ending sessions. */
export function sessionsService(deps: Deps) {
  const { db, clock, config, keys } = deps;
  const { recordSecurityEvent } = deps.base;
  const repo = identityRepo;
  const idleMs = config.BERTH_SESSION_IDLE_MINUTES * MINUTE;
  const absoluteMs = config.BERTH_SESSION_ABSOLUTE_HOURS * HOUR;

  async function issueSession(userId: string, meta: RequestMeta): Promise<IssuedSession> {
    const now = clock.now();
    const token = newSessionToken();
    const sessionId = newId('ses', now);
    const absoluteExpiresAt = new Date(now.getTime() + absoluteMs);
    await repo.insertSession(db.orm, {
      id: sessionId,
      userId,
      tokenHash: hashToken(token),
      createdAt: now,
      lastSeenAt: now,
      idleExpiresAt: new Date(Math.min(now.getTime() + idleMs, absoluteExpiresAt.getTime())),
      absoluteExpiresAt,
      ip: meta.ip,
      userAgent: meta.userAgent?.slice(0, 512) ?? null,
    });
    return { sessionId, token, csrfToken: keys.csrfToken(sessionId), absoluteExpiresAt };
  }

  return {
    issueSession,
    api: {
      /**
       * Resolves a session token to who is calling. Revoked, expired or disabled -> null.
       * Slides the idle expiry at most once a minute, so most requests only read.
       */
      async resolveSession(token: string): Promise<SessionAuth | null> {
        if (!looksLikeToken(token)) return null;
        const found = await repo.sessionByTokenHash(db.orm, hashToken(token));
        if (!found) return null;
        const { session } = found;
        const now = clock.now();
        if (
          session.revokedAt ||
          now >= session.idleExpiresAt ||
          now >= session.absoluteExpiresAt ||
          found.userStatus !== 'active'
        ) {
          return null;
        }
        if (now.getTime() - session.lastSeenAt.getTime() >= SESSION_TOUCH_INTERVAL_MS) {
          const idle = new Date(Math.min(now.getTime() + idleMs, session.absoluteExpiresAt.getTime()));
          await repo.touchSession(db.orm, session.id, now, idle, new Date(now.getTime() - SESSION_TOUCH_INTERVAL_MS));
        }
        return {
          kind: 'session',
          userId: session.userId,
          sessionId: session.id,
          mfaEnabled: found.mfaConfirmedAt !== null,
          isOperator: found.isOperator,
        };
      },

      csrfToken: (sessionId: string) => keys.csrfToken(sessionId),
      verifyCsrfToken: (sessionId: string, token: string) => keys.verifyCsrfToken(sessionId, token),

      async currentSession(auth: SessionAuth): Promise<PublicSession> {
        const s = await repo.sessionById(db.orm, auth.sessionId);
        if (!s) throw new AppError('unauthenticated', 'Sign in first.');
        return toPublicSession(s);
      },

      async logout(auth: SessionAuth, meta: RequestMeta): Promise<void> {
        await repo.revokeSession(db.orm, auth.userId, auth.sessionId, clock.now(), 'logout');
        await recordSecurityEvent({
          type: 'logout',
          userId: auth.userId,
          meta,
          details: { sessionId: auth.sessionId },
        });
      },

      async listSessions(auth: SessionAuth): Promise<Array<PublicSession & { current: boolean }>> {
        const rows = await repo.activeSessions(db.orm, auth.userId, clock.now());
        return rows.map((s) => ({ ...toPublicSession(s), current: s.id === auth.sessionId }));
      },

      async revokeSession(auth: SessionAuth, sessionId: string, meta: RequestMeta): Promise<void> {
        const ok =
          isId(sessionId, 'ses') && (await repo.revokeSession(db.orm, auth.userId, sessionId, clock.now(), 'revoked'));
        if (!ok) throw new AppError('not_found', 'No such session.');
        await recordSecurityEvent({ type: 'session_revoked', userId: auth.userId, meta, details: { sessionId } });
      },

      /** "Sign out everywhere": ends every session of the user, the current one included. */
      async revokeAllSessions(auth: SessionAuth, meta: RequestMeta): Promise<number> {
        const n = await repo.revokeUserSessions(db.orm, auth.userId, clock.now(), 'sign_out_everywhere');
        await recordSecurityEvent({ type: 'sessions_revoked', userId: auth.userId, meta, details: { count: n } });
        return n;
      },
    },
  };
}
export type SessionsService = ReturnType<typeof sessionsService>;
