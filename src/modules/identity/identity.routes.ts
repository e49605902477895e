import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { type HttpServer, problem } from '../../platform/http/server.ts';
import {
  clearSessionCookie,
  operatorRequired,
  requestMeta,
  requireOperator,
  requireSession,
  sessionRequired,
  setSessionCookie,
} from './identity.auth.ts';
import type { MfaUseCases } from './identity.mfa.ts';
import type { OperatorsService } from './identity.operators.ts';
import * as S from './identity.schemas.ts';
import type { IdentityCore, LoginResult } from './identity.service.ts';

type Deps = { core: IdentityCore & MfaUseCases & OperatorsService; publicUrl: string; clock: Clock };

/** The identity HTTP API: sign-up, sign-in, sessions, email flows, password, 2FA, operators. */
export function registerIdentityRoutes(app: HttpServer, deps: Deps) {
  const { core, publicUrl, clock } = deps;
  const ok = { ok: true as const };
  // Changes to one's own account are recorded as the user's security events, not in a workspace's audit log.
  const auditOwnAccount = { audit: { exempt: 'own account: recorded as a security event' } };
  const auditProfile = { audit: { exempt: 'own profile (display name): a personal setting, not an admin action' } };
  const auditNoChange = { audit: { exempt: 'sends a verification email; changes nothing an admin governs' } };

  /** A finished sign-in sets the cookie and answers the user and CSRF token; a 2FA step answers 401 with a challenge. */
  function signedIn(req: FastifyRequest, reply: FastifyReply, result: LoginResult, status: 200 | 201 = 200) {
    if (result.kind === 'mfa') {
      const err = new AppError('mfa_challenge_required', 'Enter the code from your authenticator app.');
      return reply
        .status(401)
        .type('application/problem+json')
        .send({ ...problem(err, req.url.split('?')[0] ?? '/', req.id), challengeToken: result.challengeToken });
    }
    setSessionCookie(reply, publicUrl, result.session, clock.now());
    return reply.status(status).send({ user: result.user, csrfToken: result.session.csrfToken });
  }

  app.post('/api/auth/signup', { config: auditOwnAccount, schema: S.SignupRoute }, async (req, reply) => {
    const { user, session } = await core.signup(req.body, requestMeta(req));
    return signedIn(req, reply, { kind: 'session', user, session }, 201);
  });

  app.post('/api/auth/login', { config: auditOwnAccount, schema: S.LoginRoute }, async (req, reply) =>
    signedIn(req, reply, await core.login(req.body, requestMeta(req))),
  );

  app.post('/api/auth/login/mfa', { config: auditOwnAccount, schema: S.LoginMfaRoute }, async (req, reply) =>
    signedIn(req, reply, await core.loginMfa(req.body, requestMeta(req))),
  );

  app.post('/api/auth/logout', { config: auditOwnAccount, schema: S.LogoutRoute }, async (req, reply) => {
    if (req.auth.kind === 'session') await core.logout(req.auth, requestMeta(req));
    clearSessionCookie(reply, publicUrl);
    return ok;
  });

  app.get('/api/auth/session', { schema: S.SessionRoute, preHandler: sessionRequired }, async (req) => {
    const auth = requireSession(req);
    const [user, session] = await Promise.all([core.me(auth), core.currentSession(auth)]);
    return { user, session, csrfToken: core.csrfToken(auth.sessionId) };
  });

  app.post(
    '/api/auth/sessions/revoke-all',
    { config: auditOwnAccount, schema: S.RevokeAllRoute, preHandler: sessionRequired },
    async (req, reply) => {
      const revoked = await core.revokeAllSessions(requireSession(req), requestMeta(req));
      clearSessionCookie(reply, publicUrl);
      return { revoked };
    },
  );

  app.get('/api/me/sessions', { schema: S.ListSessionsRoute, preHandler: sessionRequired }, async (req) => ({
    sessions: await core.listSessions(requireSession(req)),
  }));

  app.delete(
    '/api/me/sessions/:id',
    { config: auditOwnAccount, schema: S.RevokeSessionRoute, preHandler: sessionRequired },
    async (req, reply) => {
      const auth = requireSession(req);
      await core.revokeSession(auth, req.params.id, requestMeta(req));
      if (req.params.id === auth.sessionId) clearSessionCookie(reply, publicUrl);
      return ok;
    },
  );

  app.post('/api/auth/verify-email', { config: auditOwnAccount, schema: S.VerifyEmailRoute }, async (req) => ({
    user: await core.verifyEmail(req.body.token, requestMeta(req)),
  }));

  app.post(
    '/api/auth/verify-email/resend',
    { config: auditNoChange, schema: S.ResendVerificationRoute, preHandler: sessionRequired },
    async (req) => {
      await core.resendVerification(requireSession(req), requestMeta(req));
      return ok;
    },
  );

  app.post('/api/auth/password/forgot', { config: auditOwnAccount, schema: S.ForgotPasswordRoute }, async (req) => {
    await core.forgotPassword(req.body.email, requestMeta(req));
    return ok;
  });

  app.post(
    '/api/auth/password/reset',
    { config: auditOwnAccount, schema: S.ResetPasswordRoute },
    async (req, reply) => {
      await core.resetPassword(req.body, requestMeta(req));
      if (req.auth.kind === 'session') clearSessionCookie(reply, publicUrl);
      return ok;
    },
  );

  app.post(
    '/api/me/password',
    { config: auditOwnAccount, schema: S.ChangePasswordRoute, preHandler: sessionRequired },
    async (req) => {
      await core.changePassword(requireSession(req), req.body, requestMeta(req));
      return ok;
    },
  );

  app.get('/api/me', { schema: S.MeRoute, preHandler: sessionRequired }, async (req) => ({
    user: await core.me(requireSession(req)),
  }));

  app.patch('/api/me', { config: auditProfile, schema: S.UpdateMeRoute, preHandler: sessionRequired }, async (req) => ({
    user: await core.updateMe(requireSession(req), req.body),
  }));

  app.post(
    '/api/me/mfa/totp',
    { config: auditOwnAccount, schema: S.StartTotpRoute, preHandler: sessionRequired },
    async (req) => core.startTotp(requireSession(req), requestMeta(req)),
  );

  app.post(
    '/api/me/mfa/totp/confirm',
    { config: auditOwnAccount, schema: S.ConfirmTotpRoute, preHandler: sessionRequired },
    async (req) => ({
      recoveryCodes: await core.confirmTotp(requireSession(req), req.body.code, requestMeta(req)),
    }),
  );

  app.delete(
    '/api/me/mfa/totp',
    { config: auditOwnAccount, schema: S.DisableTotpRoute, preHandler: sessionRequired },
    async (req) => {
      await core.disableTotp(requireSession(req), req.body, requestMeta(req));
      return ok;
    },
  );

  app.post(
    '/api/me/mfa/recovery-codes',
    { config: auditOwnAccount, schema: S.RegenerateRecoveryCodesRoute, preHandler: sessionRequired },
    async (req) => ({
      recoveryCodes: await core.regenerateRecoveryCodes(requireSession(req), req.body.code, requestMeta(req)),
    }),
  );

  // Platform operators

  app.get('/api/operator/operators', { schema: S.ListOperatorsRoute, preHandler: operatorRequired }, async () => ({
    operators: await core.listOperators(),
  }));

  app.post('/api/operator/operators', { schema: S.AddOperatorRoute, preHandler: operatorRequired }, async (req) => ({
    user: await core.addOperator(requireOperator(req), req.body, requestMeta(req)),
  }));

  app.delete(
    '/api/operator/operators/:userId',
    { schema: S.RemoveOperatorRoute, preHandler: operatorRequired },
    async (req) => {
      await core.removeOperator(requireOperator(req), req.params.userId, requestMeta(req));
      return ok;
    },
  );

  app.post(
    '/api/operator/users/:id/disable',
    { schema: S.SetUserStatusRoute, preHandler: operatorRequired },
    async (req) => ({
      user: await core.disableUser(requireOperator(req), req.params.id, requestMeta(req)),
    }),
  );

  app.post(
    '/api/operator/users/:id/enable',
    { schema: S.SetUserStatusRoute, preHandler: operatorRequired },
    async (req) => ({
      user: await core.enableUser(requireOperator(req), req.params.id, requestMeta(req)),
    }),
  );
}
