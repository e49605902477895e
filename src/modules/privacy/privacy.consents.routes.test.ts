import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeSmtp, startFakeSmtp } from '../../../test/fakes/smtp.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { RequestView } from './index.ts';
import type { ConsentsView, ObjectionsView } from './privacy.consents.ts';

/**
 * Consents and objections through the real app, each change kept with its time and (for
 * consents) the text version; and the mailer sending marketing mail only to users whose
 * latest word on `marketing_email` is a consent given (outbox, and SMTP to a real SMTP peer).
 */

let app: TestApp;

beforeAll(async () => {
  app = await createTestApp();
});
afterAll(async () => {
  await app?.close();
});

const marketing = (user: SignedInClient, subject: string) =>
  app.modules.notifications.service.mailer.send({
    to: user.email,
    userId: user.userId,
    subject,
    text: 'Our new features.',
    tag: 'marketing.newsletter',
    kind: 'marketing',
  });

async function outboxSubjects(email: string): Promise<string[]> {
  const all = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  return all.filter((m) => m.to === email).map((m) => m.subject);
}

describe('happy: consents', () => {
  it('gives and withdraws marketing_email in one call each, keeping every change with its text version', async () => {
    const u = await signUp(app);
    const before = await u.get<ConsentsView>('/api/me/privacy/consents');
    expect(before.status).toBe(200);
    expect(before.body.consents).toEqual([
      expect.objectContaining({ purpose: 'marketing_email', given: false, textVersion: null, since: null }),
    ]);
    expect(before.body.history).toEqual([]);

    const t1 = app.clock.now().toISOString();
    const given = await u.post<ConsentsView>('/api/me/privacy/consents/marketing_email', { textVersion: '2026-01' });
    expect(given.status).toBe(200);
    expect(given.body.consents[0]).toMatchObject({ given: true, textVersion: '2026-01', since: t1 });
    // The same text again: nothing new is recorded.
    app.clock.advance(1000);
    await u.post('/api/me/privacy/consents/marketing_email', { textVersion: '2026-01' });
    // A new text: recorded as a consent to it.
    app.clock.advance(1000);
    const t2 = app.clock.now().toISOString();
    await u.post('/api/me/privacy/consents/marketing_email', { textVersion: '2026-06' });
    app.clock.advance(1000);
    const t3 = app.clock.now().toISOString();
    const withdrawn = await u.delete<ConsentsView>('/api/me/privacy/consents/marketing_email');
    expect(withdrawn.status).toBe(200);
    expect(withdrawn.body.consents[0]).toMatchObject({ given: false, textVersion: '2026-06', since: t3 });
    expect(
      withdrawn.body.history.map(({ purpose, given, textVersion, at }) => ({ purpose, given, textVersion, at })),
    ).toEqual([
      { purpose: 'marketing_email', given: false, textVersion: '2026-06', at: t3 },
      { purpose: 'marketing_email', given: true, textVersion: '2026-06', at: t2 },
      { purpose: 'marketing_email', given: true, textVersion: '2026-01', at: t1 },
    ]);
    expect(await app.modules.privacy.service.consents.hasConsent(u.userId, 'marketing_email')).toBe(false);
  });
});

describe('happy: objections', () => {
  it('records objections and their withdrawal per purpose, with history, and tracks raising them as a request', async () => {
    const u = await signUp(app);
    const before = await u.get<ObjectionsView>('/api/me/privacy/objections');
    expect(before.body.objections.map((o) => [o.purpose, o.objected])).toEqual([['product_analytics', false]]);
    const t1 = app.clock.now().toISOString();
    const objected = await u.put<ObjectionsView>('/api/me/privacy/objections', {
      objections: { product_analytics: true },
    });
    expect(objected.status).toBe(200);
    expect(objected.body.objections).toEqual([
      expect.objectContaining({ purpose: 'product_analytics', objected: true, since: t1 }),
    ]);
    expect(await app.modules.privacy.service.consents.objects(u.userId, 'product_analytics')).toBe(true);
    // Every replica's memory knows too (the gateway's and the analytics' check).
    expect(app.modules.privacy.service.consents.objecting(u.userId, 'product_analytics')).toBe(true);

    // Asking for the state it already has changes nothing; withdrawing is one call.
    app.clock.advance(1000);
    await u.put('/api/me/privacy/objections', { objections: { product_analytics: true } });
    const t2 = app.clock.now().toISOString();
    const withdrawn = await u.put<ObjectionsView>('/api/me/privacy/objections', {
      objections: { product_analytics: false },
    });
    expect(withdrawn.body.history.map(({ purpose, objected, at }) => ({ purpose, objected, at }))).toEqual([
      { purpose: 'product_analytics', objected: false, at: t2 },
      { purpose: 'product_analytics', objected: true, at: t1 },
    ]);
    expect(await app.modules.privacy.service.consents.objects(u.userId, 'product_analytics')).toBe(false);
    expect(app.modules.privacy.service.consents.objecting(u.userId, 'product_analytics')).toBe(false);

    const requests = await u.get<{ data: RequestView[] }>('/api/me/privacy/requests');
    expect(requests.body.data).toEqual([
      expect.objectContaining({ type: 'objection', status: 'completed', details: 'product_analytics' }),
    ]);
  });
});

describe('happy: marketing mail', () => {
  it('sends marketing mail only while the user’s consent is given; transactional mail always', async () => {
    const u = await signUp(app);
    await marketing(u, 'Before consent');
    await app.modules.notifications.service.mailer.send({
      to: u.email,
      userId: u.userId,
      subject: 'Security alert',
      text: 'A new sign-in.',
      tag: 'security.alert',
    });
    await u.post('/api/me/privacy/consents/marketing_email', { textVersion: '2026-01' });
    await marketing(u, 'With consent');
    await u.delete('/api/me/privacy/consents/marketing_email');
    await marketing(u, 'After withdrawal');
    const subjects = await outboxSubjects(u.email);
    expect(subjects).toContain('Security alert');
    expect(subjects).toContain('With consent');
    expect(subjects).not.toContain('Before consent');
    expect(subjects).not.toContain('After withdrawal');
    // A marketing mail to an address without an account can never be consented to.
    await app.modules.notifications.service.mailer.send({
      to: 'prospect@example.test',
      subject: 'Cold mail',
      text: 'x',
      tag: 'marketing.cold',
      kind: 'marketing',
    });
    expect(await outboxSubjects('prospect@example.test')).toEqual([]);
    const logs = app.logs.join('\n');
    expect(logs).toContain('marketing mail skipped: no consent');
    expect(logs).not.toContain(u.email);
  });

  it('applies the same rule over SMTP', async () => {
    const smtp: FakeSmtp = await startFakeSmtp();
    const withSmtp = await createTestApp({ config: { SMTP_URL: smtp.url } });
    try {
      const u = await signUp(withSmtp);
      await smtp.waitFor(1); // the verification mail
      const before = smtp.received.length;
      const send = (subject: string) =>
        withSmtp.modules.notifications.service.mailer.send({
          to: u.email,
          userId: u.userId,
          subject,
          text: 'News.',
          tag: 'marketing.newsletter',
          kind: 'marketing',
        });
      await send('Not consented');
      await u.post('/api/me/privacy/consents/marketing_email', { textVersion: 'v1' });
      await send('Consented');
      const mails = (await smtp.waitFor(before + 1)).slice(before);
      expect(mails).toHaveLength(1);
      expect(mails[0]?.raw).toMatch(/^Subject: Consented/m);
    } finally {
      await withSmtp.close();
      await smtp.close();
    }
  });
});

describe('errors', () => {
  it('refuses withdrawing a consent never given, unknown purposes and bad text versions, changing nothing', async () => {
    const u = await signUp(app);
    const none = await u.delete('/api/me/privacy/consents/marketing_email');
    expect(none.status).toBe(409);
    expect(none.body.code).toBe('consent_not_given');
    const unknown = await u.post('/api/me/privacy/consents/selling_data', { textVersion: 'v1' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.code).toBe('validation_failed');
    for (const body of [{}, { textVersion: '' }, { textVersion: 'a b' }, { textVersion: 'x'.repeat(65) }]) {
      const res = await u.post('/api/me/privacy/consents/marketing_email', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    const badObjection = await u.put('/api/me/privacy/objections', { objections: { selling_data: true } });
    expect(badObjection.status).toBe(400);
    // A purpose Berth does not process for is not one to object to.
    const retired = await u.put('/api/me/privacy/objections', { objections: { service_improvement: true } });
    expect(retired.status).toBe(400);
    const notBool = await u.put('/api/me/privacy/objections', { objections: { product_analytics: 'yes' } });
    expect(notBool.status).toBe(400);
    expect((await u.get<ConsentsView>('/api/me/privacy/consents')).body.history).toEqual([]);
    expect((await u.get<ObjectionsView>('/api/me/privacy/objections')).body.history).toEqual([]);
  });
});

describe('security', () => {
  it('answers 401 to anonymous callers, and shows each user only their own choices', async () => {
    const anon = new TestClient(app);
    expect((await anon.get('/api/me/privacy/consents')).status).toBe(401);
    expect((await anon.post('/api/me/privacy/consents/marketing_email', { textVersion: 'v1' })).status).toBe(401);
    expect((await anon.delete('/api/me/privacy/consents/marketing_email')).status).toBe(401);
    expect((await anon.get('/api/me/privacy/objections')).status).toBe(401);
    expect((await anon.put('/api/me/privacy/objections', { objections: {} })).status).toBe(401);
    const a = await signUp(app);
    const b = await signUp(app);
    await a.post('/api/me/privacy/consents/marketing_email', { textVersion: 'v1' });
    await a.put('/api/me/privacy/objections', { objections: { product_analytics: true } });
    expect((await b.get<ConsentsView>('/api/me/privacy/consents')).body.history).toEqual([]);
    expect((await b.get<ObjectionsView>('/api/me/privacy/objections')).body.history).toEqual([]);
    expect(await app.modules.privacy.service.consents.hasConsent(b.userId, 'marketing_email')).toBe(false);
  });
});
