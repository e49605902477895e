import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeSmtp, startFakeSmtp } from '../../../test/fakes/smtp.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';
import { createLogger } from '../../platform/logger.ts';
import { smtpMailer } from './notifications.service.ts';

describe('happy: SMTP', () => {
  let smtp: FakeSmtp;
  let app: TestApp;
  beforeAll(async () => {
    smtp = await startFakeSmtp();
    app = await createTestApp({ config: { SMTP_URL: smtp.url, BERTH_MAIL_FROM: 'Berth <no-reply@berth.test>' } });
  });
  afterAll(async () => {
    await app?.close();
    await smtp?.close();
  });

  it('sends the verification email of a sign-up over SMTP, and keeps nothing in the outbox', async () => {
    expect(app.modules.notifications.service.transport).toBe('smtp');
    const before = smtp.received.length;
    const user = await signUp(app);
    const [mail] = (await smtp.waitFor(before + 1)).slice(before);
    expect(mail?.from).toBe('no-reply@berth.test');
    expect(mail?.to).toEqual([user.email]);
    expect(mail?.raw).toMatch(/^Subject: Confirm your email address for Berth/m);
    expect(mail?.raw).toMatch(/^X-Berth-Tag: verify_email/m);
    const token = mail?.raw.replace(/=\r?\n/g, '').match(/token=3D([A-Za-z0-9_-]{43})|token=([A-Za-z0-9_-]{43})/);
    const value = token?.[1] ?? token?.[2] ?? '';
    expect(value).toHaveLength(43);
    expect(await app.modules.notifications.service.listOutbox()).toEqual([]);
    // The mailed link works.
    const verified = await user.post<{ user: { emailVerified: boolean } }>('/api/auth/verify-email', { token: value });
    expect(verified.status).toBe(200);
    expect(verified.body.user.emailVerified).toBe(true);
    // The log says a mail was sent, by tag only.
    const logs = app.logs.join('\n');
    expect(logs).toContain('"tag":"verify_email"');
    expect(logs).not.toContain(value);
    expect(logs).not.toContain(user.email);
  });

  it('logs in to SMTP servers that require credentials', async () => {
    const authSmtp = await startFakeSmtp({ auth: { user: 'berth', pass: 's3cret pass' } });
    const logs: string[] = [];
    const mailer = smtpMailer({
      url: authSmtp.url,
      from: 'Berth <no-reply@berth.test>',
      logger: createLogger({ destination: { write: (l: string) => logs.push(l) } }),
    });
    try {
      await mailer.send({
        to: 'ops@example.test',
        subject: 'Receipt',
        text: 'Body with a secret link',
        tag: 'receipt',
      });
      const [mail] = await authSmtp.waitFor(1);
      expect(mail?.user).toBe('berth');
      expect(mail?.raw).toContain('Body with a secret link');
      expect(logs.join('\n')).not.toContain('Body with a secret link');
      expect(logs.join('\n')).not.toContain('s3cret');
    } finally {
      mailer.close();
      await authSmtp.close();
    }
  });
});

describe('errors', () => {
  it('fails a send when the SMTP server refuses the login, and a sign-up still succeeds', async () => {
    const authSmtp = await startFakeSmtp({ auth: { user: 'berth', pass: 'right' } });
    const url = authSmtp.url.replace('berth:right@', 'berth:wrong@');
    const mailer = smtpMailer({ url, from: 'Berth <no-reply@berth.test>', logger: createLogger({ level: 'silent' }) });
    try {
      await expect(mailer.send({ to: 'a@example.test', subject: 's', text: 't', tag: 'x' })).rejects.toBeTruthy();
      expect(authSmtp.received).toHaveLength(0);
    } finally {
      mailer.close();
      await authSmtp.close();
    }
    // With an unreachable SMTP server, sign-up still answers 201 (the user can ask for a new link).
    const app = await createTestApp({ config: { SMTP_URL: url } });
    try {
      const user = await signUp(app);
      expect(user.userId).toMatch(/^usr_/);
      expect(app.logs.join('\n')).toContain('mail not sent');
    } finally {
      await app.close();
    }
  });
});

describe('happy: outbox', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('keeps mail in the outbox without SMTP, lists it newest first, and purges it after 30 days', async () => {
    const svc = app.modules.notifications.service;
    expect(svc.transport).toBe('outbox');
    const email = testEmail();
    await svc.mailer.send({ to: email, subject: 'First', text: 'one', tag: 'test' });
    app.clock.advance(1000);
    await svc.mailer.send({ to: email, subject: 'Second', text: 'two', tag: 'test' });
    const list = await svc.listOutbox({ limit: 2 });
    expect(list.map((m) => m.subject)).toEqual(['Second', 'First']);
    expect(list[0]).toMatchObject({ to: email, text: 'two', tag: 'test' });
    expect(list[0]?.id).toMatch(/^out_/);
    expect(await svc.listOutbox({ limit: 1 })).toHaveLength(1);
    app.clock.advance(29 * DAY);
    expect(await svc.purgeOutbox()).toBe(0);
    app.clock.advance(DAY + 1000);
    expect(await svc.purgeOutbox()).toBeGreaterThanOrEqual(2);
    expect(await svc.listOutbox()).toEqual([]);
    expect(app.logs.join('\n')).not.toContain(email);
  });
});
