import { isNotNull, lte, or, type SQL } from 'drizzle-orm';
import { boolean, index, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** A tenant. Row-level security is keyed on `id` (see migrations/0005_workspaces.sql). */
export const workspaces = pgTable('workspaces', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  requireMfa: boolean('require_mfa').notNull().default(false),
  status: text('status', { enum: ['active', 'restricted', 'suspended'] })
    .notNull()
    .default('active'),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

/** A user's role in a workspace; at least one owner per workspace, always. */
export const memberships = pgTable(
  'memberships',
  {
    workspaceId: text('workspace_id').notNull(),
    userId: text('user_id').notNull(),
    role: text('role', { enum: ['owner', 'admin', 'member', 'viewer'] }).notNull(),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.userId] }), index('memberships_user_idx').on(t.userId)],
);

/**
 * An invitation by email: the token is sent once and kept as its SHA-256. Until the email
 * has left (a job, after commit), the token also waits in `tokenCiphertext`, encrypted by
 * the vault under the workspace's data key; sending or closing the invitation clears it.
 */
export const invitations = pgTable('invitations', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  email: text('email').notNull(),
  role: text('role', { enum: ['admin', 'member', 'viewer'] }).notNull(),
  tokenHash: text('token_hash').notNull().unique(),
  tokenCiphertext: bytea('token_ciphertext'),
  emailSentAt: ts('email_sent_at'),
  invitedBy: text('invited_by'),
  expiresAt: ts('expires_at').notNull(),
  acceptedAt: ts('accepted_at'),
  declinedAt: ts('declined_at'),
  revokedAt: ts('revoked_at'),
  createdAt: ts('created_at').notNull(),
});

export type WorkspaceRow = typeof workspaces.$inferSelect;
export type MembershipRow = typeof memberships.$inferSelect;
export type InvitationRow = typeof invitations.$inferSelect;

/** The data map entries of the tables this module owns. */
export const workspacesTables = [
  mapTable(workspaces, {
    purpose: 'Workspaces (tenants) that group members, keys, agents and usage',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false, { export: 'workspace' }),
      name: col('tenancy', false, { purpose: 'Name members give their workspace' }),
      requireMfa: col('tenancy', false, { purpose: 'Whether every member must use two-factor authentication' }),
      status: col('tenancy', false, { purpose: 'Active, restricted (no new processing) or suspended by an operator' }),
      createdBy: col('identifier', true, { purpose: 'Which user created the workspace' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
  mapTable(memberships, {
    purpose: 'Who belongs to which workspace, with which role (access control)',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'user',
    columns: {
      workspaceId: col('identifier', false),
      userId: col('identifier', true),
      role: col('tenancy', true),
      createdAt: col('tenancy', true),
      updatedAt: col('tenancy', true),
    },
  }),
  mapTable(invitations, {
    purpose: 'Invitations to join a workspace, sent by email',
    basis: 'legitimate_interest',
    retention: 'until_expiry',
    expiredWhen: (asOf) =>
      or(
        lte(invitations.expiresAt, asOf),
        isNotNull(invitations.acceptedAt),
        isNotNull(invitations.declinedAt),
        isNotNull(invitations.revokedAt),
      ) as SQL,
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      email: col('account', true, {
        purpose: 'Address the invitation was sent to, matched when it is accepted',
        export: 'subject_email',
        // Erasing the person deletes the invitations sent to their address.
        erase: 'delete',
      }),
      role: col('tenancy', false),
      tokenHash: col('credential', false, { secret: true }),
      tokenCiphertext: col('credential', false, {
        secret: true,
        purpose: 'The invitation token, encrypted, only until the invitation email is sent (then cleared)',
      }),
      emailSentAt: col('tenancy', false, { purpose: 'When the invitation email was handed to the mail server' }),
      invitedBy: col('identifier', true, { purpose: 'Which member sent the invitation' }),
      expiresAt: col('tenancy', false),
      acceptedAt: col('tenancy', true, { exportOf: 'email', erase: 'delete' }),
      declinedAt: col('tenancy', true, { exportOf: 'email', erase: 'delete' }),
      revokedAt: col('tenancy', false),
      createdAt: col('tenancy', false),
    },
  }),
];
