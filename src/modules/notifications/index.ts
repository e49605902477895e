// The notifications module: Berth's outgoing email, through SMTP when SMTP_URL is set,
// otherwise kept in the email_outbox table for the operator. Other modules import only this file.
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import {
  consentGatedMailer,
  type Mailer,
  type MarketingConsent,
  type OutboxMessage,
  outboxMailer,
  outboxService,
  smtpMailer,
} from './notifications.service.ts';
import { notificationsTables } from './notifications.tables.ts';

export type { Mailer, MailMessage, MarketingConsent, OutboxMessage } from './notifications.service.ts';
export {
  OUTBOX_PLATFORM_OWNER,
  OUTBOX_RETENTION_DAYS,
  smtpMailer,
  UNREADABLE_BODY,
} from './notifications.service.ts';
export { MAIL_RELAY } from './notifications.tables.ts';

export type NotificationsService = {
  mailer: Mailer;
  /** Which transport `mailer` uses. */
  transport: 'smtp' | 'outbox';
  /**
   * The outbox, newest first (for `berth mail outbox`). Empty when SMTP is configured.
   *
   * @example const messages = await notifications.listOutbox({ limit: 20 });
   */
  listOutbox(args?: { limit?: number }): Promise<OutboxMessage[]>;
  /** Deletes outbox messages whose link expired (at the latest 30 days after they were written). */
  purgeOutbox(): Promise<number>;
  /**
   * Sets who decides whether a marketing mail (`kind: 'marketing'`) may go to a user: the
   * privacy module's consent records. Until then marketing mail is skipped.
   *
   * @example notifications.useMarketingConsent((userId) => consents.hasConsent(userId, 'marketing_email'));
   */
  useMarketingConsent(check: MarketingConsent): void;
};

export const OUTBOX_PURGE_JOB = 'notifications.purge-outbox';

/**
 * Needs the vault: outbox bodies are stored encrypted (under the recipient's key, or
 * OUTBOX_PLATFORM_OWNER's for addresses without an account).
 */
export function createNotificationsModule(
  deps: PlatformDeps & { vault: Pick<VaultService, 'encrypt' | 'decryptString'> },
): Module<NotificationsService> {
  const outbox = outboxService(deps);
  const smtpUrl = deps.config.SMTP_URL;
  const transport = smtpUrl
    ? smtpMailer({ url: smtpUrl, from: deps.config.BERTH_MAIL_FROM, logger: deps.logger })
    : outboxMailer(deps);
  let consent: MarketingConsent | null = null;
  const mailer = consentGatedMailer(transport, { consent: () => consent, logger: deps.logger });
  return {
    service: {
      mailer,
      transport: smtpUrl ? 'smtp' : 'outbox',
      ...outbox,
      useMarketingConsent(check) {
        consent = check;
      },
    },
    dataMap: moduleDataMap('notifications', notificationsTables),
    async registerJobs(jobs: Jobs) {
      await jobs.register(OUTBOX_PURGE_JOB, async () => {
        await outbox.purgeOutbox();
      });
      await jobs.schedule(OUTBOX_PURGE_JOB, '23 * * * *');
    },
  };
}
