import { isNotNull, lte, or, type SQL } from 'drizzle-orm';
import { bigint, boolean, integer, jsonb, pgTable, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';
import { MAIL_RELAY } from '../notifications/index.ts';

/**
 * An account's status: `active`; `disabled` by an operator; `closing`, closed by its owner's
 * deletion request until it is erased or the owner cancels (only the cancel link reopens it).
 */
export const USER_STATUSES = ['active', 'disabled', 'closing'] as const;

export const users = pgTable('users', {
  id: text('id').primaryKey(),
  email: text('email').notNull(),
  displayName: text('display_name'),
  passwordHash: text('password_hash').notNull(),
  status: text('status', { enum: USER_STATUSES }).notNull(),
  isOperator: boolean('is_operator').notNull(),
  emailVerifiedAt: ts('email_verified_at'),
  passwordChangedAt: ts('password_changed_at').notNull(),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

export const sessions = pgTable('sessions', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  tokenHash: text('token_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  lastSeenAt: ts('last_seen_at').notNull(),
  idleExpiresAt: ts('idle_expires_at').notNull(),
  absoluteExpiresAt: ts('absolute_expires_at').notNull(),
  revokedAt: ts('revoked_at'),
  revokeReason: text('revoke_reason'),
  ip: text('ip'),
  userAgent: text('user_agent'),
});

export const emailTokens = pgTable('email_tokens', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  purpose: text('purpose', { enum: ['verify_email', 'reset_password'] }).notNull(),
  tokenHash: text('token_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at'),
});

export const mfaTotp = pgTable('mfa_totp', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  secretCiphertext: bytea('secret_ciphertext').notNull(),
  confirmedAt: ts('confirmed_at'),
  lastUsedStep: bigint('last_used_step', { mode: 'number' }).notNull(),
  createdAt: ts('created_at').notNull(),
});

export const mfaRecoveryCodes = pgTable('mfa_recovery_codes', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  codeHash: text('code_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  usedAt: ts('used_at'),
});

export const loginChallenges = pgTable('login_challenges', {
  id: text('id').primaryKey(),
  userId: text('user_id').notNull(),
  tokenHash: text('token_hash').notNull(),
  createdAt: ts('created_at').notNull(),
  expiresAt: ts('expires_at').notNull(),
  attempts: integer('attempts').notNull(),
  usedAt: ts('used_at'),
});

/**
 * Throttling counters, one row per counted attempt: failed sign-ins (per account, per IP),
 * sign-ups per IP and email requests per address and per IP. Keys are HMACs.
 */
export const loginFailures = pgTable('login_failures', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  kind: text('kind', { enum: ['account', 'ip', 'signup_ip', 'email_address', 'email_ip'] }).notNull(),
  keyHash: text('key_hash').notNull(),
  createdAt: ts('created_at').notNull(),
});

export const securityEvents = pgTable('security_events', {
  id: text('id').primaryKey(),
  userId: text('user_id'),
  type: text('type').notNull(),
  ip: text('ip'),
  userAgent: text('user_agent'),
  details: jsonb('details').$type<Record<string, string | number | boolean | null>>().notNull(),
  createdAt: ts('created_at').notNull(),
});

const id = col('identifier', false);
const userRef = col('identifier', true);
const time = col('security', false);

/** The identity module's entries in the data map. */
export const identityTables = [
  mapTable(users, {
    purpose: 'User accounts: who may sign in and how to reach them',
    basis: 'contract',
    retention: 'account_lifetime',
    subject: 'user',
    // The address goes to the mail server with every message Berth sends.
    recipients: MAIL_RELAY,
    columns: {
      id: userRef,
      email: col('account', true),
      displayName: col('account', true),
      passwordHash: col('credential', true, { secret: true, purpose: 'Argon2id hash to verify the password' }),
      status: col('account', true),
      isOperator: col('account', true),
      emailVerifiedAt: col('account', true),
      passwordChangedAt: col('security', true),
      createdAt: col('account', true),
      updatedAt: col('account', true),
    },
  }),
  mapTable(sessions, {
    purpose: 'Signed-in browser sessions',
    basis: 'contract',
    retention: 'until_expiry',
    expiredWhen: (asOf) =>
      or(
        lte(sessions.absoluteExpiresAt, asOf),
        lte(sessions.idleExpiresAt, asOf),
        isNotNull(sessions.revokedAt),
      ) as SQL,
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      tokenHash: col('credential', true, { secret: true, purpose: 'SHA-256 of the session token' }),
      createdAt: col('security', true),
      lastSeenAt: col('security', true),
      idleExpiresAt: time,
      absoluteExpiresAt: time,
      revokedAt: col('security', true),
      revokeReason: col('security', true),
      ip: col('security', true),
      userAgent: col('security', true),
    },
  }),
  mapTable(emailTokens, {
    purpose: 'Single-use links for email verification and password reset',
    basis: 'contract',
    retention: 'until_expiry',
    expiredWhen: (asOf) => or(lte(emailTokens.expiresAt, asOf), isNotNull(emailTokens.usedAt)) as SQL,
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      purpose: col('security', false),
      tokenHash: col('credential', true, { secret: true }),
      createdAt: time,
      expiresAt: time,
      usedAt: time,
    },
  }),
  mapTable(mfaTotp, {
    purpose: 'Time-based one-time password second factor',
    basis: 'contract',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      secretCiphertext: col('credential', true, { secret: true, purpose: 'TOTP secret, vault ciphertext' }),
      confirmedAt: col('security', true),
      lastUsedStep: col('security', true),
      createdAt: col('security', true),
    },
  }),
  mapTable(mfaRecoveryCodes, {
    purpose: 'Single-use recovery codes for the second factor',
    basis: 'contract',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      codeHash: col('credential', true, { secret: true }),
      createdAt: col('security', true),
      usedAt: col('security', true),
    },
  }),
  mapTable(loginChallenges, {
    purpose: 'Pending second-factor step of a sign-in',
    basis: 'contract',
    retention: 'until_expiry',
    expiredWhen: (asOf) => or(lte(loginChallenges.expiresAt, asOf), isNotNull(loginChallenges.usedAt)) as SQL,
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      tokenHash: col('credential', true, { secret: true }),
      createdAt: time,
      expiresAt: time,
      attempts: col('security', true),
      usedAt: time,
    },
  }),
  mapTable(loginFailures, {
    purpose:
      'Throttling counters: failed sign-ins, sign-ups and email requests (keyed hashes of email and IP, no plaintext)',
    basis: 'legitimate_interest',
    retention: 'until_expiry',
    subject: 'none',
    columns: {
      id,
      kind: col('security', false),
      // A keyed hash that expires within hours: nothing to erase.
      keyHash: col('security', true, { purpose: 'HMAC of the email or IP address', erase: 'keep' }),
      createdAt: time,
    },
  }),
  mapTable(securityEvents, {
    purpose: 'Security history of an account: sign-ins, failures, factor and password changes',
    basis: 'legitimate_interest',
    retention: 'security_13_months',
    subject: 'user',
    columns: {
      id,
      userId: userRef,
      type: col('security', true),
      ip: col('security', true),
      userAgent: col('security', true),
      details: col('security', true),
      createdAt: col('security', true),
    },
  }),
];
