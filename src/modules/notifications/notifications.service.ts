import nodemailer from 'nodemailer';
import { type Clock, DAY } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { type VaultContext, VaultError, type VaultOwner, type VaultService } from '../vault/index.ts';
import { notificationsRepo } from './notifications.repo.ts';

export type MailMessage = {
  to: string;
  subject: string;
  text: string;
  html?: string;
  tag: string;
  /** The recipient's account, when there is one: the outbox encrypts the body under its key. */
  userId?: string;
  /** When the link in the message stops working: the outbox keeps the message until then (at most 30 days). */
  expiresAt?: Date;
  /** An id of the token the message carries (e.g. the token row's id), for `retract` once it is used. */
  ref?: string;
  /**
   * `transactional` (default): what the account needs (security alerts, receipts, notices).
   * `marketing`: sent only to a `userId` with a current `marketing_email` consent, else skipped.
   */
  kind?: 'transactional' | 'marketing';
};

/** Whether the user has a current consent to marketing email (the privacy module answers). */
export type MarketingConsent = (userId: string) => Promise<boolean>;

/**
 * The mailer every module gets: marketing mail goes out only to an account whose consent
 * `consent()` confirms at the moment of sending; without a `userId`, or before the privacy
 * module is wired (`consent()` null), it is skipped. The log names the tag only.
 */
export function consentGatedMailer(
  inner: Mailer,
  deps: { consent: () => MarketingConsent | null; logger: Pick<Logger, 'info'> },
): Mailer {
  return {
    async send(message) {
      if (message.kind === 'marketing') {
        const check = deps.consent();
        if (!message.userId || !check || !(await check(message.userId))) {
          deps.logger.info({ tag: message.tag }, 'marketing mail skipped: no consent');
          return;
        }
      }
      await inner.send(message);
    },
    ...(inner.retract ? { retract: (ref: string) => inner.retract?.(ref) ?? Promise.resolve() } : {}),
  };
}

/** Where Berth's email goes: SMTP when configured, else the outbox table. */
export type Mailer = {
  send(message: MailMessage): Promise<void>;
  /** Forgets stored copies of the messages sent with this `ref` (a used token's link). A no-op over SMTP. */
  retract?(ref: string): Promise<void>;
};

export type OutboxMessage = { id: string; to: string; subject: string; text: string; tag: string; createdAt: string };

/** The longest an outbox message is kept, whatever its link's lifetime. */
export const OUTBOX_RETENTION_DAYS = 30;

/**
 * The vault owner of outbox messages to addresses without an account (invitations). The
 * vault knows user and workspace owners; `platform` can never be a workspace id (those are
 * `ws_…`), so this is the install's own key for mail, never shredded with a workspace.
 */
export const OUTBOX_PLATFORM_OWNER: VaultOwner = { type: 'workspace', id: 'platform' };

/** Shown by `listOutbox` for a message whose key was destroyed (the recipient was erased). */
export const UNREADABLE_BODY = '(unreadable: the recipient’s data key was destroyed)';

const bodyContext = (id: string, userId: string | null): VaultContext => ({
  owner: userId ? { type: 'user', id: userId } : OUTBOX_PLATFORM_OWNER,
  record: `email_outbox:${id}`,
  field: 'body_text',
});

/**
 * Sends through an SMTP server (nodemailer). The URL carries host, port and credentials:
 * `smtp://user:pass@host:587` (STARTTLS when offered) or `smtps://host:465` (TLS).
 * Logs only the tag: never the recipient, subject or body (bodies may carry links with tokens).
 */
export function smtpMailer(opts: { url: string; from: string; logger: Logger }): Mailer & { close(): void } {
  const transport = nodemailer.createTransport(opts.url);
  return {
    async send(message) {
      await transport.sendMail({
        from: opts.from,
        to: message.to,
        subject: message.subject,
        text: message.text,
        ...(message.html ? { html: message.html } : {}),
        headers: { 'X-Berth-Tag': message.tag },
      });
      opts.logger.info({ tag: message.tag, transport: 'smtp' }, 'mail sent');
    },
    async retract() {
      // Nothing is kept once SMTP has the message.
    },
    close: () => transport.close(),
  };
}

type OutboxDeps = { db: Db; clock: Clock; logger: Logger; vault: Pick<VaultService, 'encrypt' | 'decryptString'> };

/**
 * Keeps messages in the `email_outbox` table for `berth mail outbox` (no SMTP configured):
 * the body as vault ciphertext, the row until the link in it expires or is used.
 */
export function outboxMailer(deps: OutboxDeps): Mailer {
  const repo = notificationsRepo;
  return {
    async send(message) {
      const now = deps.clock.now();
      const id = newId('out', now);
      const userId = message.userId ?? null;
      const maxExpiry = now.getTime() + OUTBOX_RETENTION_DAYS * DAY;
      const expiresAt = new Date(Math.min(message.expiresAt?.getTime() ?? maxExpiry, maxExpiry));
      const bodyCiphertext = await deps.vault.encrypt(bodyContext(id, userId), message.text);
      await repo.insert(deps.db.orm, {
        id,
        toAddress: message.to,
        subject: message.subject,
        bodyCiphertext,
        userId,
        ref: message.ref ?? null,
        tag: message.tag,
        createdAt: now,
        expiresAt,
      });
      deps.logger.info({ tag: message.tag, transport: 'outbox' }, 'mail queued in outbox');
    },
    async retract(ref) {
      await repo.deleteByRef(deps.db.orm, ref);
    },
  };
}

export function outboxService(deps: OutboxDeps) {
  const repo = notificationsRepo;
  return {
    /** Newest first, bodies decrypted. */
    async listOutbox(args: { limit?: number } = {}): Promise<OutboxMessage[]> {
      const limit = Math.min(Math.max(args.limit ?? 50, 1), 1000);
      const rows = await repo.list(deps.db.orm, limit);
      return Promise.all(
        rows.map(async (r) => {
          let text: string;
          try {
            text = await deps.vault.decryptString(bodyContext(r.id, r.userId), r.bodyCiphertext);
          } catch (err) {
            if (!(err instanceof VaultError)) throw err;
            text = UNREADABLE_BODY;
          }
          return {
            id: r.id,
            to: r.toAddress,
            subject: r.subject,
            text,
            tag: r.tag,
            createdAt: r.createdAt.toISOString(),
          };
        }),
      );
    },
    /** Deletes messages whose link expired (at the latest 30 days after they were written). */
    async purgeOutbox(): Promise<number> {
      return repo.deleteExpired(deps.db.orm, deps.clock.now());
    },
  };
}
