// The audit module: every state-changing action writes one event, in the same transaction
// as the change, into a per-workspace (or the platform) hash chain that is append-only,
// tamper-evident and periodically sealed by signed checkpoints.
import type { Database } from '../../platform/db/db.ts';
import type { Actor } from '../../platform/http/context.ts';
import type { Module, PlatformDeps } from '../types.ts';

/** What a caller records. `workspaceId: null` writes to the platform chain (operator actions). */
export type AuditInput = {
  workspaceId: string | null;
  actor: Actor;
  /** Dotted `noun.verb`: 'key.created', 'member.role_changed' ... */
  action: string;
  target: { type: string; id: string };
  outcome?: 'success' | 'failure';
  /** Small structured diff; never secrets or content. */
  diff?: Record<string, unknown>;
};

export type AuditService = {
  /**
   * Appends one event to its chain inside the caller's transaction, so the event commits
   * (or rolls back) with the change it records.
   *
   * @example await audit.record(tx, { workspaceId, actor: scope.actor, action: 'key.created', target: { type: 'key', id } });
   */
  record(tx: Database, input: AuditInput): Promise<{ id: string; seq: number }>;
};

export type AuditModuleDeps = PlatformDeps;

export declare function createAuditModule(deps: AuditModuleDeps): Module<AuditService>;
