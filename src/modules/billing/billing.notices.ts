import type { Role } from '../../platform/http/context.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Mailer } from '../notifications/index.ts';
import { ROLES, type WorkspacesService } from '../workspaces/index.ts';

/** A billing message to a workspace's people: the subject and text are the same for each. */
export type BillingNotice = {
  workspaceId: string;
  /** Who gets it: owners only (suspension, receipts) or owners and admins (budget alerts). */
  roles: readonly Role[];
  /** Members who get it too, whatever their role (e.g. who paid); each person gets one copy. */
  userIds?: readonly string[];
  subject: string;
  text: string;
  /** The mail's tag (logged instead of the content). */
  tag: string;
};

type Deps = {
  mailer: Mailer;
  workspaces: Pick<WorkspacesService, 'contacts'>;
  logger: Logger;
};

/**
 * Sends billing's emails (receipts, budget alerts, low-balance and suspension notices) to the
 * members of a workspace with the given roles. A failed delivery to one person is logged by
 * tag and does not stop the others; the count of messages handed to the mailer is returned.
 *
 * @example await notices.send({ workspaceId, roles: ['owner'], subject: 'Receipt', text, tag: 'billing.receipt' });
 */
export function billingNotices(deps: Deps) {
  return {
    async send(notice: BillingNotice): Promise<number> {
      const also = notice.userIds ?? [];
      const people = also.length
        ? (await deps.workspaces.contacts(notice.workspaceId, ROLES)).filter(
            (p) => notice.roles.includes(p.role) || also.includes(p.userId),
          )
        : await deps.workspaces.contacts(notice.workspaceId, notice.roles);
      let sent = 0;
      for (const p of people) {
        try {
          await deps.mailer.send({
            to: p.email,
            subject: notice.subject,
            text: notice.text,
            tag: notice.tag,
            userId: p.userId,
          });
          sent++;
        } catch (err) {
          deps.logger.warn({ tag: notice.tag, err: (err as Error).name }, 'billing notice not sent');
        }
      }
      return sent;
    },
  };
}

export type BillingNotices = ReturnType<typeof billingNotices>;
