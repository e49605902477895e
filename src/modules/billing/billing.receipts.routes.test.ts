import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeSmtp } from '../../../test/fakes/smtp.ts';
import { type FakeStripe, startFakeStripe, signature as stripeSignature } from '../../../test/fakes/stripe.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { listen } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { RECEIPT_JOB } from './index.ts';

/**
 * Receipts: mailed once per payment, after the webhook's top-up committed, to the owners and
 * to the member who paid (once each); never again for a redelivered event; a mail that
 * cannot be sent does not touch the webhook. Payments and receipts over HTTP.
 */

const SECRET = 'whsec_receipts_0123456789';

type Payment = { id: string; status: string; amountMicros: number; cardBrand: string | null; cardLast4: string | null };
type Receipt = {
  paymentId: string;
  amountMicros: number;
  paidAt: string;
  cardBrand: string | null;
  cardLast4: string | null;
  balanceAfterMicros: number | null;
};

let stripe: FakeStripe;

function stripeConfig() {
  return {
    BERTH_STRIPE_SECRET_KEY: stripe.secretKey,
    BERTH_STRIPE_WEBHOOK_SECRETS: SECRET,
    BERTH_STRIPE_API_URL: stripe.url,
    BERTH_FREE_CREDITS_USD: '0',
  };
}

async function deliver(app: TestApp, body: string) {
  const url = await listen(app);
  const sig = stripeSignature(body, SECRET, Math.floor(app.clock.now().getTime() / 1000));
  const res = await fetch(`${url}/api/billing/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': sig },
    body,
  });
  return { status: res.status, body: (await res.json()) as { applied?: boolean; code?: string } };
}

/** A workspace of `owner`, with `others` joined through invitations in their roles. */
async function team(app: TestApp, others: Array<{ user: SignedInClient; role: 'admin' | 'member' }> = []) {
  const owner = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Receipts & Co' });
  const workspaceId = ws.body.id;
  const scope = { workspaceId, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
  for (const o of others) {
    const { token } = await app.modules.workspaces.service.invite({ scope, email: o.user.email, role: o.role });
    await app.modules.workspaces.service.acceptInvitation({ token, userId: o.user.userId });
  }
  return { owner, workspaceId };
}

async function checkout(owner: SignedInClient, workspaceId: string, amountMicros = 12_500_000) {
  const res = await owner.post<{ paymentId: string }>(`/api/workspaces/${workspaceId}/billing/checkout`, {
    amountMicros,
  });
  expect(res.status, res.text).toBe(201);
  const session = [...stripe.sessions.values()].find((s) => s.metadata.payment_id === res.body.paymentId);
  if (!session) throw new Error('no session at the processor');
  return { paymentId: res.body.paymentId, sessionId: session.id };
}

async function receiptsTo(app: TestApp, paymentId: string) {
  const all = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  return all.filter((m) => m.tag === 'billing.receipt' && m.text.includes(paymentId));
}

beforeAll(async () => {
  stripe = await startFakeStripe();
});
afterAll(async () => {
  await stripe?.close();
});

describe('with the outbox', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp({ config: stripeConfig() });
  });
  afterAll(async () => {
    await app?.close();
  });

  describe('happy', () => {
    it('mails one receipt per payment to the owners and to the member who paid, never again on a redelivery', async () => {
      const payer = await signUp(app);
      const member = await signUp(app);
      const { owner, workspaceId } = await team(app, [
        { user: payer, role: 'admin' },
        { user: member, role: 'member' },
      ]);
      const { paymentId, sessionId } = await checkout(owner, workspaceId);
      // The owner who started the checkout hands ownership over before the payment arrives.
      const moved = await owner.post(`/api/workspaces/${workspaceId}/transfer-ownership`, { userId: payer.userId });
      expect(moved.status, moved.text).toBe(204);

      const event = stripe.completedEvent(sessionId);
      expect(await deliver(app, event)).toEqual({ status: 200, body: { applied: true } });
      expect(await app.jobs.drain(RECEIPT_JOB)).toEqual({ completed: 1, failed: 0 });
      const sent = await receiptsTo(app, paymentId);
      // The new owner, and the member who paid (now an admin); not the other member.
      expect(sent.map((m) => m.to).sort()).toEqual([owner.email, payer.email].sort());

      // Redelivered, also several at once: applied once, mailed once.
      const again = await Promise.all([deliver(app, event), deliver(app, event), deliver(app, event)]);
      for (const r of again) expect(r).toEqual({ status: 200, body: { applied: false } });
      expect(await app.jobs.drain(RECEIPT_JOB)).toEqual({ completed: 0, failed: 0 });
      expect(await receiptsTo(app, paymentId)).toHaveLength(2);

      // The mail says what the receipt route says.
      const receipt = (await payer.get<Receipt>(`/api/workspaces/${workspaceId}/billing/payments/${paymentId}/receipt`))
        .body;
      expect(receipt).toMatchObject({ paymentId, amountMicros: 12_500_000, balanceAfterMicros: 12_500_000 });
      const text = sent[0]?.text ?? '';
      expect(sent[0]?.subject).toBe('Receipt: 12.50 USD of Berth credits');
      expect(text).toContain('12.50 USD of credits were added to Receipts & Co');
      expect(text).toMatch(new RegExp(`Receipt for payment: +${paymentId}\n`));
      expect(text).toMatch(new RegExp(`Paid: +${receipt.paidAt.slice(0, 16).replace('T', ' ')} UTC\n`));
      expect(text).toMatch(/Credits available after it: +12\.50 USD\n/);
      if (receipt.cardLast4) expect(text).toContain(`ending ${receipt.cardLast4}`);
      expect(text).toContain(`/api/workspaces/${workspaceId}/billing/payments/${paymentId}/receipt/html`);
    });

    it('mails the owner once when the owner paid', async () => {
      const { owner, workspaceId } = await team(app);
      const { paymentId, sessionId } = await checkout(owner, workspaceId, 5_000_000);
      expect((await deliver(app, stripe.completedEvent(sessionId))).body).toEqual({ applied: true });
      await app.jobs.drain(RECEIPT_JOB);
      expect((await receiptsTo(app, paymentId)).map((m) => m.to)).toEqual([owner.email]);
    });

    it('lists payments with their card, and shows the receipt of a paid one as JSON and as a page', async () => {
      const { owner, workspaceId } = await team(app);
      const paid = await checkout(owner, workspaceId, 7_000_000);
      const pending = await checkout(owner, workspaceId, 3_000_000);
      await deliver(app, stripe.completedEvent(paid.sessionId));
      const base = `/api/workspaces/${workspaceId}/billing/payments`;
      const list = await owner.get<{ data: Payment[]; nextCursor: string | null }>(base);
      expect(list.status).toBe(200);
      expect(list.body.data.map((p) => [p.id, p.status, p.amountMicros])).toEqual([
        [pending.paymentId, 'pending', 3_000_000],
        [paid.paymentId, 'paid', 7_000_000],
      ]);
      const page1 = await owner.get<{ data: Payment[]; nextCursor: string | null }>(`${base}?limit=1`);
      expect(page1.body.nextCursor).toBe(pending.paymentId);
      const page2 = await owner.get<{ data: Payment[] }>(`${base}?limit=1&cursor=${page1.body.nextCursor}`);
      expect(page2.body.data.map((p) => p.id)).toEqual([paid.paymentId]);

      const shown = list.body.data[1] as Payment;
      const receipt = await owner.get<Receipt>(`${base}/${paid.paymentId}/receipt`);
      expect(receipt.status).toBe(200);
      expect(receipt.body).toMatchObject({
        paymentId: paid.paymentId,
        amountMicros: 7_000_000,
        cardBrand: shown.cardBrand,
        cardLast4: shown.cardLast4,
        balanceAfterMicros: 7_000_000,
      });
      const html = await owner.get(`${base}/${paid.paymentId}/receipt/html`);
      expect(html.status).toBe(200);
      expect(html.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(html.text).toContain('7.00 USD');
      expect(html.text).toContain('Receipts &amp; Co');
    });
  });

  describe('errors', () => {
    it('has no receipt for a pending payment or an unknown id', async () => {
      const { owner, workspaceId } = await team(app);
      const pending = await checkout(owner, workspaceId);
      for (const id of [pending.paymentId, 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1', 'x']) {
        const res = await owner.get(`/api/workspaces/${workspaceId}/billing/payments/${id}/receipt`);
        expect(res.status, id).toBe(404);
        expect(res.body.code).toBe('not_found');
      }
      await app.jobs.drain(RECEIPT_JOB);
      expect(await receiptsTo(app, pending.paymentId)).toEqual([]);
    });
  });

  describe('security', () => {
    it("answers 404 for another workspace's payment, also through its own workspace's URL", async () => {
      const mine = await team(app);
      const theirs = await team(app);
      const paid = await checkout(theirs.owner, theirs.workspaceId);
      await deliver(app, stripe.completedEvent(paid.sessionId));
      const viaMine = await mine.owner.get(
        `/api/workspaces/${mine.workspaceId}/billing/payments/${paid.paymentId}/receipt`,
      );
      expect(viaMine.status).toBe(404);
      const viaTheirs = await mine.owner.get(
        `/api/workspaces/${theirs.workspaceId}/billing/payments/${paid.paymentId}/receipt`,
      );
      expect(viaTheirs.status).toBe(404);
      expect(
        (await mine.owner.get<{ data: Payment[] }>(`/api/workspaces/${mine.workspaceId}/billing/payments`)).body.data,
      ).toEqual([]);
    });
  });
});

describe('with a mail server that refuses', () => {
  it('applies the payment all the same, and logs the failed receipt by its tag only', async () => {
    const smtp = await startFakeSmtp({ auth: { user: 'berth', pass: 'right-password' } });
    const app = await createTestApp({
      config: { ...stripeConfig(), SMTP_URL: `smtp://berth:wrong-password@127.0.0.1:${smtp.port}` },
    });
    try {
      const { owner, workspaceId } = await team(app);
      const { paymentId, sessionId } = await checkout(owner, workspaceId, 9_000_000);
      expect(await deliver(app, stripe.completedEvent(sessionId))).toEqual({ status: 200, body: { applied: true } });
      expect(await app.jobs.drain(RECEIPT_JOB)).toEqual({ completed: 1, failed: 0 });
      expect(smtp.received).toEqual([]);
      const balance = await owner.get<{ availableMicros: number }>(`/api/workspaces/${workspaceId}/billing/balance`);
      expect(balance.body.availableMicros).toBe(9_000_000);
      const failures = app.logs.filter((l) => l.includes('billing notice not sent'));
      expect(failures).toHaveLength(1);
      expect(failures[0]).toContain('"tag":"billing.receipt"');
      // Neither the address, nor the amount, nor the payment.
      // (The amount as the receipt prints it: a bare "9.00" could be part of the line's timestamp.)
      for (const leak of [owner.email, '9.00 USD', '9000000', paymentId]) expect(failures[0]).not.toContain(leak);
    } finally {
      await app.close();
      await smtp.close();
    }
  });
});
