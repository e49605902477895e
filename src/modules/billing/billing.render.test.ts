import { describe, expect, it } from 'vitest';
import { checkPdf, pdfToText } from '../../../test/helpers/pdf.ts';
import {
  escapeHtml,
  receiptText,
  renderReceiptHtml,
  renderStatementHtml,
  renderStatementPdf,
  renderTextPdf,
} from './billing.render.ts';
import type { ReceiptView, StatementView } from './billing.statements.schemas.ts';

/** Statements and receipts as pages, PDFs and mail text: pure functions of the JSON views. */

const XSS = '<script>alert("x")</script>';

function line(name: string, costMicros: number) {
  return {
    name,
    requests: 1234,
    errors: 1,
    inputTokens: 1_500_000,
    outputTokens: 20_000,
    cachedTokens: 0,
    reasoningTokens: 0,
    costMicros,
  };
}

function statement(over: Partial<StatementView> = {}): StatementView {
  return {
    workspaceId: 'ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1',
    period: '2026-03',
    number: 'BER-2026-03-000042',
    status: 'closed',
    periodStart: '2026-03-01T00:00:00.000Z',
    periodEnd: '2026-04-01T00:00:00.000Z',
    asOf: '2026-04-01T00:00:00.000Z',
    closedAt: '2026-04-02T01:17:00.000Z',
    currency: 'usd',
    openingBalanceMicros: 2_000_000,
    grantedMicros: 5_000_000,
    boughtMicros: 25_000_000,
    refundedMicros: 1_000_000,
    adjustedMicros: -500_000,
    expiredMicros: 250_000,
    usedMicros: 3_123_456,
    closingBalanceMicros: 27_126_544,
    settlements: 1234,
    reconciled: true,
    usage: {
      requests: 1234,
      costMicros: 3_123_456,
      matchesLedger: true,
      differenceMicros: 0,
      note: null,
      byModel: [line('gpt-4o', 3_123_456)],
      byKey: [line('key_01JD6F3Q4N8ZK5R2W7XH9YB0C1', 3_123_456)],
    },
    ...over,
  };
}

const receipt: ReceiptView = {
  paymentId: 'pay_01JD6F3Q4N8ZK5R2W7XH9YB0C1',
  workspaceId: 'ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1',
  amountMicros: 25_000_000,
  currency: 'usd',
  paidAt: '2026-03-31T22:10:00.000Z',
  cardBrand: 'visa',
  cardLast4: '4242',
  transactionId: 'ltx_01JD6F3Q4N8ZK5R2W7XH9YB0C1',
  balanceAfterMicros: 30_050_000,
};

const ctx = { workspaceName: 'Acme', issuer: 'Berth Hosting Ltd, 1 Quay St, VAT GB123' };

describe('happy', () => {
  it('renders a statement as a self-contained page with every figure of the JSON', () => {
    const html = renderStatementHtml(statement(), ctx);
    expect(html).toMatch(/^<!doctype html>/);
    for (const text of [
      'Statement BER-2026-03-000042',
      'Issued by Berth Hosting Ltd, 1 Quay St, VAT GB123',
      'Acme',
      '2.00 USD',
      '+5.00 USD',
      '+25.00 USD',
      '-1.00 USD',
      '-0.50 USD',
      '-0.25 USD',
      '-3.123456 USD',
      '27.126544 USD',
      '1,234 settled calls',
      'gpt-4o',
      '1,500,000',
    ]) {
      expect(html, text).toContain(text);
    }
    // Nothing is fetched from anywhere and nothing runs.
    expect(html).not.toMatch(/<script|<link|<img|src=|href=|url\(/i);
  });

  it('renders a statement as a PDF that a reader opens', () => {
    const pdf = renderStatementPdf(statement(), ctx);
    const check = checkPdf(pdf);
    expect(check.problems).toEqual([]);
    expect(check.pages).toBe(1);
    for (const text of ['Statement BER-2026-03-000042', 'Acme', '+25.00 USD', '27.126544 USD', 'gpt-4o']) {
      expect(check.text, text).toContain(text);
    }
    const read = pdfToText(pdf);
    if (read) {
      expect(read.complaints).toBe('');
      expect(read.text).toContain('Statement BER-2026-03-000042');
      expect(read.text).toContain('27.126544 USD');
    }
  });

  it('spreads long statements over numbered pages and wraps long lines at spaces', () => {
    const many = Array.from({ length: 150 }, (_, i) => line(`model-${i}`, i));
    const pdf = renderStatementPdf(statement({ usage: { ...statement().usage, byModel: many } }), ctx);
    const check = checkPdf(pdf);
    expect(check.problems).toEqual([]);
    expect(check.pages).toBe(3);
    expect(check.text).toContain('page 3 of 3');
    expect(check.text).toContain('model-149');
    const wrapped = checkPdf(renderTextPdf('t', [{ text: `${'word '.repeat(40)}end` }]));
    const lines = wrapped.text.split('\n').filter((l) => l.startsWith('word'));
    expect(lines.length).toBe(3);
    expect(lines.every((l) => l.length <= 90 && !l.startsWith(' '))).toBe(true);
  });

  it('renders a receipt as a page and as mail text, with the card and the balance after it', () => {
    const html = renderReceiptHtml(receipt, ctx);
    expect(html).toContain('25.00 USD');
    expect(html).toContain('visa ending 4242');
    expect(html).toContain('30.05 USD');
    const text = receiptText(receipt, { ...ctx, url: 'http://berth.test/r' });
    expect(text).toContain('25.00 USD of credits were added to Acme');
    expect(text).toMatch(/Paid:\s+2026-03-31 22:10 UTC/);
    expect(text).toMatch(/Card:\s+visa ending 4242/);
    expect(text).toMatch(/Credits available after it:\s+30.05 USD/);
    // Without card details (not reported) the line is left out.
    expect(receiptText({ ...receipt, cardBrand: null, cardLast4: null }, { ...ctx, url: 'x' })).not.toContain('Card:');
  });

  it('says when a statement is a draft, does not reconcile, or differs from the usage events', () => {
    const draft = statement({
      number: null,
      status: 'draft',
      closedAt: null,
      asOf: '2026-03-15T10:00:00.000Z',
      reconciled: false,
      usage: { ...statement().usage, matchesLedger: false, differenceMicros: 5, note: 'The usage events differ.' },
    });
    const html = renderStatementHtml(draft, ctx);
    expect(html).toContain('Statement 2026-03 (draft)');
    expect(html).toContain('figures as of 2026-03-15 10:00 UTC');
    expect(html).toContain('WARNING: the movements do not add up');
    expect(html).toContain('The usage events differ.');
  });
});

describe('security', () => {
  it('escapes every value in pages: a workspace, model or key named like markup stays text', () => {
    const s = statement({
      usage: { ...statement().usage, byModel: [line(XSS, 1)], byKey: [line(`"'&${XSS}`, 1)] },
    });
    const html = renderStatementHtml(s, { workspaceName: XSS, issuer: XSS });
    expect(html).not.toContain('<script');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;');
    expect(html).toContain('&quot;&#39;&amp;&lt;script&gt;');
    const page = renderReceiptHtml({ ...receipt, cardBrand: XSS }, { workspaceName: XSS, issuer: null });
    expect(page).not.toContain('<script');
    expect(escapeHtml(`<>&"'`)).toBe('&lt;&gt;&amp;&quot;&#39;');
  });

  it('keeps a PDF valid whatever the names hold: PDF delimiters are escaped, other scripts become ?', () => {
    const name = 'Ünïcødé (π) \\ ) ( 東京 \u0000';
    const pdf = renderStatementPdf(statement({ usage: { ...statement().usage, byModel: [line(name, 1)] } }), {
      workspaceName: name,
      issuer: null,
    });
    const check = checkPdf(pdf);
    expect(check.problems).toEqual([]);
    expect(check.text).toContain('Ünïcødé (?) \\ ) ( ?? ?');
    const read = pdfToText(pdf);
    if (read) {
      expect(read.complaints).toBe('');
      expect(read.text).toContain('Ünïcødé (?)');
    }
  });
});
