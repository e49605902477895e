import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type GatewayWorkspace, gatewayWorkspace, usageRow } from '../../../test/helpers/gateway.ts';
import { checkPdf, pdfToText } from '../../../test/helpers/pdf.ts';
import { manualClock } from '../../platform/clock.ts';
import { newId } from '../../platform/ids.ts';
import { STATEMENTS_JOB } from './index.ts';

/**
 * Monthly statements against the real ledger and gateway: a workspace's March with grants,
 * top-ups, refunds, an adjustment, an expiry and metered calls up to the last second of the
 * month, closed once by the job after the month ended (however often it runs), and April as
 * a draft carrying March's closing balance. The clock moves across the month's end; HTTP
 * goes through API keys with `billing:read` (sessions would expire as the clock moves).
 */

type Line = { name: string; requests: number; inputTokens: number; outputTokens: number; costMicros: number };
type Statement = {
  workspaceId: string;
  period: string;
  number: string | null;
  status: 'closed' | 'draft';
  asOf: string;
  openingBalanceMicros: number;
  grantedMicros: number;
  boughtMicros: number;
  refundedMicros: number;
  adjustedMicros: number;
  expiredMicros: number;
  usedMicros: number;
  closingBalanceMicros: number;
  settlements: number;
  reconciled: boolean;
  usage: {
    requests: number;
    costMicros: number;
    matchesLedger: boolean;
    differenceMicros: number;
    note: string | null;
    byModel: Line[];
    byKey: Line[];
  };
};
type Entry = { kind: string; amountMicros: number; createdAt: string };

const clock = manualClock('2026-03-31T20:00:00.000Z');
const system = { type: 'system', name: 'test' } as const;
const SCOPES = ['gateway:invoke', 'usage:read', 'billing:read'];

let app: TestApp;
let fake: FakeOpenAi;
/** Workspace A: the one whose March is checked figure by figure. */
let a: GatewayWorkspace;
let api: TestClient;
let marchBalance: number;

function keyed(secret: string): TestClient {
  const c = new TestClient(app);
  c.headers = { authorization: `Bearer ${secret}` };
  return c;
}

const url = (w: { workspaceId: string }, path: string) => `/api/workspaces/${w.workspaceId}/billing${path}`;

async function call(w: GatewayWorkspace, text: string) {
  await w.openai.chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: text }],
    max_tokens: 50,
  });
  await app.modules.gateway.service.idle();
  await app.modules.gateway.service.usage.flush();
}

async function total(workspaceId: string): Promise<number> {
  const b = await app.modules.billing.ledger.balance(workspaceId);
  return b.availableMicros + b.heldMicros;
}

async function statementRows(workspaceId: string) {
  return app.db.system(async (tx) => {
    const res = (await tx.execute(
      sql`select period, number, seq from billing_statements where workspace_id = ${workspaceId} order by period`,
    )) as unknown as { rows: Array<{ period: string; number: string; seq: number }> };
    return res.rows;
  });
}

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({
    clock,
    config: {
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_FREE_CREDITS_USD: '1',
      BERTH_INVOICE_ISSUER: 'Berth Test Hosting',
    },
  });
  a = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }],
    key: { scopes: SCOPES },
  });
  api = keyed(a.secret);
  const ledger = app.modules.billing.ledger;
  const move = { workspaceId: a.workspaceId, actor: system };
  await ledger.grant({ ...move, amountMicros: 10_000_000, idempotencyKey: 'promo-march-0001', memo: 'promo' });
  await ledger.topUp({ ...move, amountMicros: 25_000_000, idempotencyKey: 'topup-march-0001' });
  await call(a, 'one two three');
  await call(a, 'four five six seven');
  await ledger.refund({ ...move, amountMicros: 5_000_000, idempotencyKey: 'refund-march-0001' });
  await ledger.adjust({ ...move, deltaMicros: -500_000, idempotencyKey: 'adjust-march-0001', memo: 'correction' });
  await app.db.tenant(a.workspaceId, (tx) =>
    ledger.expireIn(tx, { ...move, amountMicros: 200_000, idempotencyKey: 'expire-march-0001' }),
  );
  // The month's last second: still March.
  clock.set('2026-03-31T23:59:59.000Z');
  await call(a, 'eight nine');
  marchBalance = await total(a.workspaceId);
  // April.
  clock.set('2026-04-01T00:10:00.000Z');
  await call(a, 'ten eleven twelve');
  await ledger.grant({ ...move, amountMicros: 2_000_000, idempotencyKey: 'promo-april-0001' });
});
afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('happy', () => {
  it('closes March once the month ended, with exact figures that reconcile with the ledger and the usage', async () => {
    const statements = app.modules.billing.statements;
    // Within the first hour of April, March stays open (a draft).
    expect(await statements.closeDue()).toBe(0);
    expect((await api.get<Statement>(url(a, '/invoices/2026-03'))).body).toMatchObject({
      status: 'draft',
      number: null,
    });

    clock.set('2026-04-02T01:17:00.000Z');
    // The scheduled job, twice, and the service at the same time: one statement.
    expect(await app.jobs.send(STATEMENTS_JOB, {})).toBeTruthy();
    await app.jobs.drain(STATEMENTS_JOB);
    await Promise.all([statements.closeDue(), statements.closeDue()]);
    await app.jobs.send(STATEMENTS_JOB, {});
    await app.jobs.drain(STATEMENTS_JOB);
    const rows = await statementRows(a.workspaceId);
    expect(rows).toEqual([
      { period: '2026-03', number: expect.stringMatching(/^BER-2026-03-\d{6}$/), seq: expect.any(Number) },
    ]);
    expect(rows[0]?.number).toBe(`BER-2026-03-${String(rows[0]?.seq).padStart(6, '0')}`);
    expect((await statements.closeMonth(a.workspaceId, '2026-03')).created).toBe(false);

    const entries = (await api.get<{ data: Entry[] }>(`${url(a, '/entries')}?limit=1000`)).body.data;
    const marchSettled = entries.filter((e) => e.kind === 'settle' && e.createdAt < '2026-04');
    expect(marchSettled).toHaveLength(3);
    const used = marchSettled.reduce((n, e) => n + e.amountMicros, 0);
    expect(used).toBeGreaterThan(0);

    const res = await api.get<Statement>(url(a, '/invoices/2026-03'));
    expect(res.status).toBe(200);
    const march = res.body;
    expect(march).toMatchObject({
      workspaceId: a.workspaceId,
      period: '2026-03',
      number: rows[0]?.number,
      status: 'closed',
      asOf: '2026-04-01T00:00:00.000Z',
      openingBalanceMicros: 0,
      grantedMicros: 11_000_000,
      boughtMicros: 25_000_000,
      refundedMicros: 5_000_000,
      adjustedMicros: -500_000,
      expiredMicros: 200_000,
      usedMicros: used,
      settlements: 3,
      reconciled: true,
    });
    // The closing balance is what the balance row held at the month's end, and what the movements add up to.
    expect(march.closingBalanceMicros).toBe(marchBalance);
    expect(march.closingBalanceMicros).toBe(11_000_000 + 25_000_000 - 5_000_000 - 500_000 - 200_000 - used);
    // The usage events agree with the ledger, model by model and key by key.
    expect(march.usage).toMatchObject({
      requests: 3,
      costMicros: used,
      matchesLedger: true,
      differenceMicros: 0,
      note: null,
    });
    const gatewayView = await api.get<{ data: Line[] & Array<{ group: string }> }>(
      `/api/workspaces/${a.workspaceId}/usage?groupBy=model&since=2026-03-01T00:00:00Z&until=2026-04-01T00:00:00Z`,
    );
    const [model] = gatewayView.body.data;
    expect(march.usage.byModel).toEqual([
      expect.objectContaining({
        name: 'gpt-4o',
        requests: 3,
        inputTokens: (model as unknown as Line).inputTokens,
        outputTokens: (model as unknown as Line).outputTokens,
        costMicros: used,
      }),
    ]);
    expect(march.usage.byKey).toEqual([expect.objectContaining({ name: a.keyId, requests: 3, costMicros: used })]);
  });

  it("shows April as a draft that opens with March's closing balance and closes at the live balance", async () => {
    const res = await api.get<Statement>(url(a, '/invoices/2026-04'));
    expect(res.status).toBe(200);
    const april = res.body;
    const settled = (await api.get<{ data: Entry[] }>(`${url(a, '/entries')}?limit=1000`)).body.data.filter(
      (e) => e.kind === 'settle' && e.createdAt >= '2026-04',
    );
    expect(settled).toHaveLength(1);
    expect(april).toMatchObject({
      status: 'draft',
      number: null,
      asOf: clock.now().toISOString(),
      openingBalanceMicros: marchBalance,
      grantedMicros: 2_000_000,
      boughtMicros: 0,
      usedMicros: settled[0]?.amountMicros,
      closingBalanceMicros: await total(a.workspaceId),
      reconciled: true,
      usage: { requests: 1, matchesLedger: true },
    });
    expect(april.closingBalanceMicros).toBe(marchBalance + 2_000_000 - (settled[0]?.amountMicros ?? 0));
  });

  it('lists statements newest first, the draft first, page by page', async () => {
    const all = await api.get<{ data: Statement[]; nextCursor: string | null }>(url(a, '/invoices'));
    expect(all.status).toBe(200);
    expect(all.body.data.map((s) => [s.period, s.status])).toEqual([
      ['2026-04', 'draft'],
      ['2026-03', 'closed'],
    ]);
    expect(all.body.nextCursor).toBeNull();
    const first = await api.get<{ data: Statement[]; nextCursor: string | null }>(`${url(a, '/invoices')}?limit=1`);
    expect(first.body.data.map((s) => s.period)).toEqual(['2026-04', '2026-03']);
    expect(first.body.nextCursor).toBe('2026-03');
    const next = await api.get<{ data: Statement[]; nextCursor: string | null }>(
      `${url(a, '/invoices')}?cursor=2026-03`,
    );
    expect(next.body).toEqual({ data: [], nextCursor: null });
  });

  it('serves a statement as a printable page and as a PDF, and breaks cost down by day, model, key and provider', async () => {
    const page = await app.http.inject({
      method: 'GET',
      url: url(a, '/invoices/2026-03/html'),
      headers: { authorization: `Bearer ${a.secret}` },
    });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
    const march = (await api.get<Statement>(url(a, '/invoices/2026-03'))).body;
    expect(page.body).toContain(`Statement ${march.number}`);
    expect(page.body).toContain('Issued by Berth Test Hosting');
    expect(page.body).toContain('+25.00 USD');

    const pdf = await app.http.inject({
      method: 'GET',
      url: url(a, '/invoices/2026-03/pdf'),
      headers: { authorization: `Bearer ${a.secret}` },
    });
    expect(pdf.statusCode).toBe(200);
    expect(pdf.headers['content-type']).toBe('application/pdf');
    expect(pdf.headers['content-disposition']).toBe(`inline; filename="${march.number}.pdf"`);
    const check = checkPdf(pdf.rawPayload);
    expect(check.problems).toEqual([]);
    expect(check.text).toContain(`Statement ${march.number}`);
    expect(check.text).toContain('+25.00 USD');
    const read = pdfToText(pdf.rawPayload);
    if (read) expect(read.text).toContain(`Statement ${march.number}`);

    const byDay = await api.get<{ costMicros: number; requests: number; data: Array<{ group: string }> }>(
      `${url(a, '/usage')}?from=2026-03-01&to=2026-04-30`,
    );
    expect(byDay.status).toBe(200);
    expect(byDay.body.data.map((d) => d.group)).toEqual(['2026-03-31', '2026-04-01']);
    const april = (await api.get<Statement>(url(a, '/invoices/2026-04'))).body;
    expect(byDay.body).toMatchObject({ groupBy: 'day', requests: 4, costMicros: march.usedMicros + april.usedMicros });
    for (const groupBy of ['model', 'key', 'provider']) {
      const res = await api.get<{ data: Array<{ group: string; costMicros: number }> }>(
        `${url(a, '/usage')}?from=2026-03-01&to=2026-03-31&groupBy=${groupBy}`,
      );
      expect(res.status, groupBy).toBe(200);
      expect(res.body.data, groupBy).toHaveLength(1);
      expect(res.body.data[0]?.costMicros, groupBy).toBe(march.usedMicros);
    }
    // Without dates: this month so far.
    const thisMonth = await api.get<{ from: string; to: string; requests: number }>(url(a, '/usage'));
    expect(thisMonth.body).toMatchObject({ from: '2026-04-01', to: '2026-04-02', requests: 1 });
  });
});

describe('errors', () => {
  it('refuses periods that are no month or have not started, on every statement route, with invalid_period', async () => {
    for (const period of [
      '2026-13',
      '2026-00',
      'abc',
      '2026-1',
      '26-03',
      '2026-03-01',
      '1999-12',
      '2026-05',
      '9999-12',
    ]) {
      for (const suffix of ['', '/html', '/pdf']) {
        const res = await api.get(url(a, `/invoices/${period}${suffix}`));
        expect(res.status, `${period}${suffix}`).toBe(400);
        expect(res.body.code, `${period}${suffix}`).toBe('invalid_period');
      }
    }
    const cursor = await api.get(`${url(a, '/invoices')}?cursor=march`);
    expect(cursor.status).toBe(400);
    expect(cursor.body.code).toBe('invalid_period');
  });

  it('refuses bad dates, reversed ranges and ranges over 400 days with invalid_date_range', async () => {
    for (const qs of [
      'from=abc',
      'to=2026-02-30',
      'from=2026-3-01',
      'from=2026-04-02&to=2026-04-01',
      'from=2025-01-01&to=2026-04-01',
      'from=1999-12-31&to=2000-01-01',
    ]) {
      const res = await api.get(`${url(a, '/usage')}?${qs}`);
      expect(res.status, qs).toBe(400);
      expect(res.body.code, qs).toBe('invalid_date_range');
    }
    expect((await api.get(`${url(a, '/usage')}?from=2025-03-01&to=2026-04-04`)).status).toBe(200);
    const group = await api.get(`${url(a, '/usage')}?groupBy=week`);
    expect(group.status).toBe(400);
    expect(group.body.code).toBe('validation_failed');
  });

  it('says in the statement when the usage events and the ledger differ', async () => {
    const w = await gatewayWorkspace(app, { key: { scopes: SCOPES } });
    // A metered call the ledger never charged (as when credits are not metered).
    app.modules.gateway.service.usage.record(
      usageRow({
        id: newId('use', clock.now()),
        requestId: newId('req', clock.now()),
        workspaceId: w.workspaceId,
        model: 'gpt-4o',
        costMicros: 1_234,
        createdAt: clock.now(),
      }),
    );
    await app.modules.gateway.service.usage.flush();
    const res = await keyed(w.secret).get<Statement>(url(w, '/invoices/2026-04'));
    expect(res.body).toMatchObject({
      usedMicros: 0,
      reconciled: true,
      usage: {
        costMicros: 1_234,
        matchesLedger: false,
        differenceMicros: 1_234,
        note: expect.stringContaining('0.001234 USD more'),
      },
    });
  });
});

describe('security', () => {
  it("answers 404 for another workspace's statements, usage and payments, and 403 without billing:read", async () => {
    const b = await gatewayWorkspace(app, { key: { scopes: SCOPES } });
    for (const path of [
      '/invoices',
      '/invoices/2026-03',
      '/invoices/2026-03/html',
      '/invoices/2026-03/pdf',
      '/usage',
      '/payments',
    ]) {
      const res = await api.get(url(b, path));
      expect(res.status, path).toBe(404);
      expect(res.body.code, path).toBe('not_found');
    }
    const noScope = await gatewayWorkspace(app);
    expect((await keyed(noScope.secret).get(url(noScope, '/invoices'))).status).toBe(403);
    // B's own March: nothing of A's shows.
    const own = await keyed(b.secret).get<Statement>(url(b, '/invoices/2026-04'));
    expect(own.body).toMatchObject({ openingBalanceMicros: 0, boughtMicros: 0, usedMicros: 0, usage: { requests: 0 } });
  });

  it('escapes a workspace or model named like markup on the printable page', async () => {
    const w = await gatewayWorkspace(app, { key: { scopes: SCOPES } });
    const xss = '<script>alert(document.cookie)</script>';
    expect((await w.owner.patch(`/api/workspaces/${w.workspaceId}`, { name: xss })).status).toBe(200);
    app.modules.gateway.service.usage.record(
      usageRow({
        id: newId('use', clock.now()),
        requestId: newId('req', clock.now()),
        workspaceId: w.workspaceId,
        model: `${xss}"'&`,
        costMicros: 0,
        createdAt: clock.now(),
      }),
    );
    await app.modules.gateway.service.usage.flush();
    const page = await app.http.inject({
      method: 'GET',
      url: url(w, '/invoices/2026-04/html'),
      headers: { authorization: `Bearer ${w.secret}` },
    });
    expect(page.statusCode).toBe(200);
    expect(page.body).not.toContain('<script');
    expect(page.body).toContain('&lt;script&gt;alert(document.cookie)&lt;/script&gt;');
    expect(page.body).toContain('&lt;script&gt;alert(document.cookie)&lt;/script&gt;&quot;&#39;&amp;');
  });
});

// Last: the clock moves two months on.
describe('closing over months', () => {
  it("catches up missed months, numbers each month's statements without gaps, and stops with a deleted workspace", async () => {
    const d = await gatewayWorkspace(app, { key: { scopes: SCOPES } });
    await app.modules.billing.ledger.topUp({
      workspaceId: d.workspaceId,
      amountMicros: 3_000_000,
      idempotencyKey: 'topup-deleted-0001',
      actor: system,
    });
    expect((await d.owner.delete(`/api/workspaces/${d.workspaceId}`, { confirmName: 'Gateway' })).status).toBe(204);

    // No run in May: June's first run closes April and May.
    clock.set('2026-06-02T01:17:00.000Z');
    expect(await app.modules.billing.statements.closeDue()).toBeGreaterThanOrEqual(3);
    expect((await statementRows(a.workspaceId)).map((r) => r.period)).toEqual(['2026-03', '2026-04', '2026-05']);
    expect((await statementRows(d.workspaceId)).map((r) => r.period)).toEqual(['2026-04']);
    // The deleted workspace's statement is kept (billing records outlive it).
    const kept = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select granted_micros::int as granted, bought_micros::int as bought, closing_micros::int as closing
            from billing_statements where workspace_id = ${d.workspaceId}`,
      )) as unknown as { rows: Array<Record<string, number>> };
      return res.rows;
    });
    expect(kept).toEqual([{ granted: 1_000_000, bought: 3_000_000, closing: 4_000_000 }]);

    // May had no movements: it opens and closes at April's closing balance.
    const april = (await api.get<Statement>(url(a, '/invoices/2026-04'))).body;
    const may = (await api.get<Statement>(url(a, '/invoices/2026-05'))).body;
    expect(april).toMatchObject({
      status: 'closed',
      reconciled: true,
      closingBalanceMicros: await total(a.workspaceId),
    });
    expect(may).toMatchObject({
      status: 'closed',
      number: expect.stringMatching(/^BER-2026-05-\d{6}$/),
      openingBalanceMicros: april.closingBalanceMicros,
      grantedMicros: 0,
      usedMicros: 0,
      closingBalanceMicros: april.closingBalanceMicros,
      reconciled: true,
    });
    // Each month's sequence runs 1..n across every workspace.
    const seqs = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select period, array_agg(seq order by seq)::text as seqs, count(*)::int as n from billing_statements group by period order by period`,
      )) as unknown as { rows: Array<{ period: string; seqs: string; n: number }> };
      return res.rows;
    });
    for (const r of seqs) {
      expect(r.seqs, r.period).toBe(`{${Array.from({ length: r.n }, (_, i) => i + 1).join(',')}}`);
    }
    expect(await app.modules.billing.statements.closeDue()).toBe(0);
  });
});
