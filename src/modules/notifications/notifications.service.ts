import { desc, lt } from 'drizzle-orm';
import nodemailer from 'nodemailer';
import { type Clock, DAY } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { emailOutbox } from './notifications.tables.ts';

export type MailMessage = { to: string; subject: string; text: string; html?: string; tag: string };

/** Where Berth's email goes: SMTP when configured, else the outbox table. */
export type Mailer = { send(message: MailMessage): Promise<void> };

export type OutboxMessage = { id: string; to: string; subject: string; text: string; tag: string; createdAt: string };

export const OUTBOX_RETENTION_DAYS = 30;

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
    close: () => transport.close(),
  };
}

/** Keeps messages in the `email_outbox` table for `berth mail outbox` (no SMTP configured). */
export function outboxMailer(opts: { db: Db; clock: Clock; logger: Logger }): Mailer {
  return {
    async send(message) {
      const now = opts.clock.now();
      await opts.db.orm.insert(emailOutbox).values({
        id: newId('out', now),
        toAddress: message.to,
        subject: message.subject,
        bodyText: message.text,
        tag: message.tag,
        createdAt: now,
      });
      opts.logger.info({ tag: message.tag, transport: 'outbox' }, 'mail queued in outbox');
    },
  };
}

export function outboxService(opts: { db: Db; clock: Clock }) {
  return {
    /** Newest first. */
    async listOutbox(args: { limit?: number } = {}): Promise<OutboxMessage[]> {
      const limit = Math.min(Math.max(args.limit ?? 50, 1), 1000);
      const rows = await opts.db.orm
        .select()
        .from(emailOutbox)
        .orderBy(desc(emailOutbox.createdAt), desc(emailOutbox.id))
        .limit(limit);
      return rows.map((r) => ({
        id: r.id,
        to: r.toAddress,
        subject: r.subject,
        text: r.bodyText,
        tag: r.tag,
        createdAt: r.createdAt.toISOString(),
      }));
    },
    /** Deletes messages older than the retention window (30 days). */
    async purgeOutbox(): Promise<number> {
      const before = new Date(opts.clock.now().getTime() - OUTBOX_RETENTION_DAYS * DAY);
      const rows = await opts.db.orm
        .delete(emailOutbox)
        .where(lt(emailOutbox.createdAt, before))
        .returning({ id: emailOutbox.id });
      return rows.length;
    },
  };
}
