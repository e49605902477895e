import { z } from 'zod';
import { singleLineText } from '../../platform/http/schemas.ts';

/** Bodies reject unknown fields; strings are bounded. Password rules are checked by the service (`weak_password`). */
const email = z.email().max(254);
const password = z.string().min(1).max(1024);
const token = z.string().min(1).max(200);
const totpCode = z.string().regex(/^\d{6}$/, 'a 6-digit code');
const recoveryCode = z.string().min(1).max(64);
const displayName = singleLineText(1, 100);

export const UserSchema = z.object({
  id: z.string(),
  email: z.string(),
  displayName: z.string().nullable(),
  status: z.enum(['active', 'disabled', 'closing']),
  isOperator: z.boolean(),
  emailVerified: z.boolean(),
  mfaEnabled: z.boolean(),
  createdAt: z.string(),
});

export const SessionSchema = z.object({
  id: z.string(),
  createdAt: z.string(),
  lastSeenAt: z.string(),
  idleExpiresAt: z.string(),
  absoluteExpiresAt: z.string(),
  ip: z.string().nullable(),
  userAgent: z.string().nullable(),
});

const SignedIn = z.object({ user: UserSchema, csrfToken: z.string() });
const Ok = z.object({ ok: z.literal(true) });
const idParam = z.string().min(1).max(100);

const tags = ['authentication'];

export const SignupRoute = {
  tags,
  summary: 'Create an account and sign in',
  body: z.strictObject({ email, password, displayName: displayName.optional() }),
  response: { 201: SignedIn },
};

export const LoginRoute = {
  tags,
  summary: 'Sign in with email and password (401 mfa_challenge_required with challengeToken when TOTP is on)',
  body: z.strictObject({ email, password }),
  response: { 200: SignedIn },
};

export const LoginMfaRoute = {
  tags,
  summary: 'Second sign-in step: a TOTP code or a recovery code',
  body: z.union([
    z.strictObject({ challengeToken: token, code: totpCode }),
    z.strictObject({ challengeToken: token, recoveryCode }),
  ]),
  response: { 200: SignedIn },
};

export const LogoutRoute = { tags, summary: 'Sign out (ends this session on the server)', response: { 200: Ok } };

export const SessionRoute = {
  tags,
  summary: 'The current session, its user and its CSRF token',
  response: { 200: z.object({ user: UserSchema, csrfToken: z.string(), session: SessionSchema }) },
};

export const RevokeAllRoute = {
  tags,
  summary: 'Sign out everywhere: ends every session of the account, this one included',
  response: { 200: z.object({ revoked: z.number().int() }) },
};

export const ListSessionsRoute = {
  tags,
  summary: 'Active sessions of the signed-in user',
  response: { 200: z.object({ sessions: z.array(SessionSchema.extend({ current: z.boolean() })) }) },
};

export const RevokeSessionRoute = {
  tags,
  summary: 'End one of your sessions',
  params: z.strictObject({ id: idParam }),
  response: { 200: Ok },
};

export const VerifyEmailRoute = {
  tags,
  summary: 'Confirm an email address with the emailed token',
  body: z.strictObject({ token }),
  response: { 200: z.object({ user: UserSchema }) },
};

export const ResendVerificationRoute = { tags, summary: 'Send a new verification email', response: { 200: Ok } };

export const ForgotPasswordRoute = {
  tags,
  summary: 'Email a password reset link (same answer for unknown addresses)',
  body: z.strictObject({ email }),
  response: { 200: Ok },
};

export const ResetPasswordRoute = {
  tags,
  summary: 'Set a new password with the emailed token; every session ends',
  body: z.strictObject({ token, password }),
  response: { 200: Ok },
};

export const ChangePasswordRoute = {
  tags,
  summary: 'Change your password; every other session ends',
  body: z.strictObject({ currentPassword: password, newPassword: password }),
  response: { 200: Ok },
};

export const MeRoute = { tags, summary: 'The signed-in user', response: { 200: z.object({ user: UserSchema }) } };

export const UpdateMeRoute = {
  tags,
  summary: 'Update your profile',
  body: z.strictObject({ displayName: displayName.nullable() }),
  response: { 200: z.object({ user: UserSchema }) },
};

export const StartTotpRoute = {
  tags,
  summary: 'Start TOTP enrolment: the secret and otpauth URI are shown once',
  response: { 200: z.object({ secret: z.string(), otpauthUri: z.string() }) },
};

export const ConfirmTotpRoute = {
  tags,
  summary: 'Confirm TOTP with a first code; answers the 10 recovery codes (shown once)',
  body: z.strictObject({ code: totpCode }),
  response: { 200: z.object({ recoveryCodes: z.array(z.string()) }) },
};

export const DisableTotpRoute = {
  tags,
  summary: 'Turn TOTP off, proving it with a current code or the password',
  body: z.union([z.strictObject({ code: totpCode }), z.strictObject({ password })]),
  response: { 200: Ok },
};

export const RegenerateRecoveryCodesRoute = {
  tags,
  summary: 'Replace the recovery codes (needs a current TOTP code)',
  body: z.strictObject({ code: totpCode }),
  response: { 200: z.object({ recoveryCodes: z.array(z.string()) }) },
};

const operatorTags = ['operators'];

export const ListOperatorsRoute = {
  tags: operatorTags,
  summary: 'Platform operators',
  response: { 200: z.object({ operators: z.array(UserSchema) }) },
};

export const AddOperatorRoute = {
  tags: operatorTags,
  summary: 'Make a user an operator',
  body: z.union([z.strictObject({ userId: z.string().min(1).max(100) }), z.strictObject({ email })]),
  response: { 200: z.object({ user: UserSchema }) },
};

export const RemoveOperatorRoute = {
  tags: operatorTags,
  summary: 'Remove an operator (never the last one)',
  params: z.strictObject({ userId: idParam }),
  response: { 200: Ok },
};

export const SetUserStatusRoute = {
  tags: operatorTags,
  summary: 'Disable (ends every session) or enable an account',
  params: z.strictObject({ id: idParam }),
  response: { 200: z.object({ user: UserSchema }) },
};
