// Placeholder: the notifications module (mailer: SMTP or outbox) lands here.
import type { Module, PlatformDeps } from '../types.ts';

export type MailMessage = { to: string; subject: string; text: string; html?: string; tag: string };
export type Mailer = { send(message: MailMessage): Promise<void> };
export type NotificationsService = { mailer: Mailer };

export function createNotificationsModule(_deps: PlatformDeps): Module<NotificationsService> {
  return { service: { mailer: { send: async () => undefined } }, dataMap: [] };
}
