import type { Database } from '../../platform/db/db.ts';
import type { WorkspaceEvent } from '../workspaces/index.ts';
import type { AuditCore, AuditInput } from './audit.service.ts';

/**
 * Maps a workspace event to its one audit event (null = recorded by another event of the
 * same action). Accepting an invitation emits `invitation.accepted` then `member.added` in
 * one transaction: only `member.added` is recorded, naming the invitation.
 */
export function workspaceAuditInput(e: WorkspaceEvent): AuditInput | null {
  const base = { workspaceId: e.workspaceId, actor: e.actor };
  const workspace = { type: 'workspace', id: e.workspaceId };
  switch (e.type) {
    case 'workspace.created':
      return { ...base, action: 'workspace.created', target: workspace, diff: { name: e.name } };
    case 'workspace.renamed':
      return { ...base, action: 'workspace.renamed', target: workspace, diff: { name: e.name } };
    case 'workspace.security_changed':
      return { ...base, action: 'workspace.security_changed', target: workspace, diff: { requireMfa: e.requireMfa } };
    case 'workspace.status_changed':
      return { ...base, action: 'workspace.status_changed', target: workspace, diff: { from: e.from, to: e.to } };
    case 'workspace.deleting':
      // Recorded in the platform chain by recordWorkspaceEvent: this chain goes with the workspace.
      return { ...base, workspaceId: null, action: 'workspace.deleted', target: workspace };
    case 'member.added':
      return {
        ...base,
        action: 'member.added',
        target: { type: 'user', id: e.userId },
        diff: { role: e.role, invitationId: e.invitationId },
      };
    case 'member.role_changed':
      return {
        ...base,
        action: 'member.role_changed',
        target: { type: 'user', id: e.userId },
        diff: { from: e.from, to: e.to },
      };
    case 'member.removed':
      return {
        ...base,
        action: e.reason === 'left' ? 'member.left' : 'member.removed',
        target: { type: 'user', id: e.userId },
        diff: { role: e.role },
      };
    case 'ownership.transferred':
      return {
        ...base,
        action: 'ownership.transferred',
        target: { type: 'user', id: e.to },
        diff: { from: e.from, to: e.to },
      };
    case 'invitation.created':
      return {
        ...base,
        action: 'invitation.created',
        target: { type: 'invitation', id: e.invitationId },
        diff: { role: e.role },
      };
    case 'invitation.revoked':
      return { ...base, action: 'invitation.revoked', target: { type: 'invitation', id: e.invitationId } };
    case 'invitation.declined':
      return { ...base, action: 'invitation.declined', target: { type: 'invitation', id: e.invitationId } };
    case 'invitation.accepted':
      return null;
  }
}

/**
 * The workspaces module's event handler (wired in app.ts): records each change in the same
 * transaction. A deletion is recorded in the platform chain with the workspace chain's
 * final head, then the workspace's chain is removed through the narrow database function
 * (the append-only trigger refuses any other deletion).
 */
export function workspaceEventRecorder(audit: Pick<AuditCore, 'record' | 'dropWorkspaceChain' | 'headOf'>) {
  return async (e: WorkspaceEvent, tx: Database): Promise<void> => {
    const input = workspaceAuditInput(e);
    if (!input) return;
    if (e.type === 'workspace.deleting') {
      const head = await audit.headOf(tx, e.workspaceId);
      await audit.record(tx, { ...input, diff: { chainSeq: head.seq, chainHash: head.hash } });
      await audit.dropWorkspaceChain(tx, e.workspaceId);
      return;
    }
    await audit.record(tx, input);
  };
}
