import { pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Credit standing (see migrations/0020_credit_standing.sql): ok, low or exhausted, per workspace.

export const STANDING_STATES = ['ok', 'low', 'exhausted'] as const;
export type StandingState = (typeof STANDING_STATES)[number];

export const creditStanding = pgTable('credit_standing', {
  workspaceId: text('workspace_id').primaryKey(),
  state: text('state', { enum: STANDING_STATES }).notNull(),
  since: ts('since').notNull(),
  lowNotifiedAt: ts('low_notified_at'),
  exhaustedAt: ts('exhausted_at'),
  exhaustedNotifiedAt: ts('exhausted_notified_at'),
  graceEndsAt: ts('grace_ends_at'),
  graceWarnedAt: ts('grace_warned_at'),
  graceExpiredAt: ts('grace_expired_at'),
  resumedAt: ts('resumed_at'),
  closedAt: ts('closed_at'),
  updatedAt: ts('updated_at').notNull(),
});

export type StandingRow = typeof creditStanding.$inferSelect;

const billing = (purpose?: string) => col('billing', false, purpose ? { purpose } : {});

export const standingTables = [
  mapTable(creditStanding, {
    purpose:
      "Whether a workspace's credits are ok, low or exhausted, the owners' notices, and the suspension grace period",
    basis: 'contract',
    // One row per workspace, kept like its balance row: a deleted workspace's closed row is what
    // keeps the standing job from looking at it again.
    retention: 'billing_7_years',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      state: billing(),
      since: billing(),
      lowNotifiedAt: billing('When the owners were warned that the balance is low (once per dip)'),
      exhaustedAt: billing('When the credits ran out (the current or last episode)'),
      exhaustedNotifiedAt: billing('When the owners were told the credits ran out'),
      graceEndsAt: billing("When deployments' runtime data are deleted unless credits come back, as owners were told"),
      graceWarnedAt: billing('When the owners were warned that the grace period ends'),
      graceExpiredAt: billing("When the grace period ended and the deployments' runtime data were deleted"),
      resumedAt: billing('When credits came back and the owners were told'),
      closedAt: billing('When the workspace was deleted (its standing is no longer kept)'),
      updatedAt: billing(),
    },
  }),
];
