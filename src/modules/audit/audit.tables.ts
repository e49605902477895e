import { bigint, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { col, mapTable } from '../../platform/db/datamap.ts';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** One audit event. `chain` is the workspace id, or 'platform' (workspace_id null) for operator actions. */
export const auditEvents = pgTable('audit_events', {
  id: text('id').primaryKey(),
  chain: text('chain').notNull(),
  workspaceId: text('workspace_id'),
  seq: bigint('seq', { mode: 'number' }).notNull(),
  occurredAt: ts('occurred_at').notNull(),
  actorType: text('actor_type').notNull().$type<'user' | 'api_key' | 'system'>(),
  actorId: text('actor_id').notNull(),
  actorUserId: text('actor_user_id'),
  ip: text('ip'),
  userAgent: text('user_agent'),
  requestId: text('request_id'),
  action: text('action').notNull(),
  targetType: text('target_type').notNull(),
  targetId: text('target_id').notNull(),
  outcome: text('outcome').notNull().$type<'success' | 'failure'>(),
  diff: jsonb('diff').$type<Record<string, unknown> | null>(),
  prevHash: text('prev_hash').notNull(),
  hash: text('hash').notNull(),
});
export type AuditEventRow = typeof auditEvents.$inferSelect;

/** The last seq and hash of each chain, and where verification starts (after retention). */
export const auditChainHeads = pgTable('audit_chain_heads', {
  chain: text('chain').primaryKey(),
  workspaceId: text('workspace_id'),
  seq: bigint('seq', { mode: 'number' }).notNull(),
  hash: text('hash').notNull(),
  anchorSeq: bigint('anchor_seq', { mode: 'number' }).notNull(),
  anchorHash: text('anchor_hash').notNull(),
});
export type AuditChainHeadRow = typeof auditChainHeads.$inferSelect;

/** Ed25519-signed statements "chain X had hash H at seq N at time T". */
export const auditCheckpoints = pgTable('audit_checkpoints', {
  id: text('id').primaryKey(),
  chain: text('chain').notNull(),
  workspaceId: text('workspace_id'),
  seq: bigint('seq', { mode: 'number' }).notNull(),
  hash: text('hash').notNull(),
  createdAt: ts('created_at').notNull(),
  keyId: text('key_id').notNull(),
  signature: text('signature').notNull(),
});
export type AuditCheckpointRow = typeof auditCheckpoints.$inferSelect;

const chainColumns = {
  chain: col('audit', false, { purpose: 'Which hash chain: a workspace id or "platform"' }),
  workspaceId: col('identifier', false),
};

/** The audit module's entries in the data map. */
export const auditTables = [
  mapTable(auditEvents, {
    purpose: 'Tamper-evident record of who changed what, for accountability and security investigations',
    // Append-only: erasure never touches it (a deleted workspace's chain is dropped by the audit module).
    erase: 'keep',
    basis: 'legitimate_interest',
    retention: 'audit_13_months',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      ...chainColumns,
      seq: col('audit', false),
      occurredAt: col('audit', false),
      actorType: col('audit', false),
      // Users are named by pseudonym and the request facts are kept in audit_event_context,
      // so erasing a user changes no event (the hash chain stays intact): `keep`.
      actorId: col('audit', true, {
        purpose: 'The user (by pseudonym) or API key that acted',
        erase: 'keep',
        export: 'subject',
      }),
      actorUserId: col('audit', true, {
        purpose: 'The user behind the actor, by pseudonym',
        erase: 'keep',
        export: 'subject',
      }),
      ip: col('audit', true, {
        purpose:
          'Client IP address of the request (events from before pseudonyms, until re-sealed; now in audit_event_context)',
        erase: 'keep',
        exportOf: 'actor_user_id',
      }),
      userAgent: col('audit', true, {
        purpose:
          'Client user agent of the request (events from before pseudonyms, until re-sealed; now in audit_event_context)',
        erase: 'keep',
        exportOf: 'actor_user_id',
      }),
      requestId: col('audit', false),
      action: col('audit', false),
      targetType: col('audit', false),
      targetId: col('audit', true, {
        purpose: 'What was changed (a user by pseudonym)',
        erase: 'keep',
        export: 'subject',
      }),
      outcome: col('audit', false),
      diff: col('audit', true, {
        purpose: 'Small structured description of the change (users by pseudonym); never secrets or content',
        erase: 'keep',
        export: 'scrubbed',
      }),
      prevHash: col('audit', false),
      hash: col('audit', false),
    },
  }),
  mapTable(auditChainHeads, {
    purpose: 'The last event and the verification anchor of each audit chain',
    // Append-only: erasure never touches it (a deleted workspace's chain is dropped by the audit module).
    erase: 'keep',
    basis: 'legitimate_interest',
    retention: 'audit_13_months',
    subject: 'none',
    columns: {
      ...chainColumns,
      seq: col('audit', false),
      hash: col('audit', false),
      anchorSeq: col('audit', false),
      anchorHash: col('audit', false),
    },
  }),
  mapTable(auditCheckpoints, {
    purpose: 'Signed checkpoints of the audit chains, kept as long as the events they cover',
    // Append-only: erasure never touches it (a deleted workspace's chain is dropped by the audit module).
    erase: 'keep',
    basis: 'legitimate_interest',
    retention: 'audit_13_months',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      ...chainColumns,
      seq: col('audit', false),
      hash: col('audit', false),
      createdAt: col('audit', false),
      keyId: col('audit', false),
      signature: col('audit', false),
    },
  }),
];

/** Who a pseudonym in the audit log is, while the account exists (erasure deletes the row). */
export const auditSubjects = pgTable('audit_subjects', {
  pseudonym: text('pseudonym').primaryKey(),
  userId: text('user_id').notNull(),
  createdAt: ts('created_at').notNull(),
});

/** The request facts of an event and the user it concerns, outside the hash chain (erasable). */
export const auditEventContext = pgTable('audit_event_context', {
  eventId: text('event_id').primaryKey(),
  occurredAt: ts('occurred_at').notNull(),
  chain: text('chain').notNull(),
  workspaceId: text('workspace_id'),
  userId: text('user_id'),
  ip: text('ip'),
  userAgent: text('user_agent'),
});

/** The data map entries of the erasable companions of the audit log (see audit.subjects.ts). */
export const auditSubjectTables = [
  mapTable(auditSubjects, {
    purpose:
      'Resolving the pseudonyms the audit log names users by, for as long as the account exists; erasing the user deletes the row, and their audit events then name nobody',
    basis: 'legitimate_interest',
    retention: 'account_lifetime',
    subject: 'user',
    columns: {
      pseudonym: col('identifier', true, {
        purpose: 'Keyed hash of the user id, as audit events store it',
        export: 'alias',
      }),
      userId: col('identifier', true),
      createdAt: col('audit', false),
    },
  }),
  mapTable(auditEventContext, {
    purpose:
      'Client IP address and user agent of the request behind an audit event, and the user it concerns, kept beside the hash chain so erasure can remove them',
    basis: 'legitimate_interest',
    retention: 'audit_13_months',
    retentionFrom: 'occurred_at',
    subject: 'user',
    columns: {
      eventId: col('identifier', false),
      occurredAt: col('audit', false),
      chain: col('audit', false, { purpose: 'Which hash chain: a workspace id or "platform"' }),
      workspaceId: col('identifier', false),
      userId: col('identifier', true, { purpose: 'The user behind the actor' }),
      ip: col('audit', true, { purpose: 'Client IP address of the request' }),
      userAgent: col('audit', true, { purpose: 'Client user agent of the request' }),
    },
  }),
];
