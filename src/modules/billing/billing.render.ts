import { microsToUsd } from '../../platform/money.ts';
import type { ReceiptView, StatementView } from './billing.statements.schemas.ts';
import type { UsageLine } from './billing.statements.tables.ts';

/**
 * Statements and receipts for people: a self-contained printable HTML page (no scripts, no
 * outside resources, every value escaped), a text-only PDF, and the receipt email's text.
 * Pure functions of the views, so what a page shows is what the JSON says.
 */

export type RenderContext = {
  /** The workspace's current name (its id when it no longer exists). */
  workspaceName: string;
  /** Who issues the statements (BERTH_INVOICE_ISSUER), null when not configured. */
  issuer: string | null;
};

/** The Content-Security-Policy rendered pages are served with: no scripts, nothing from outside. */
export const DOCUMENT_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

const usd = (micros: number) => `${microsToUsd(micros)} USD`;
const signed = (micros: number, sign: '+' | '-') => (micros === 0 ? usd(0) : `${sign}${usd(micros)}`);
const adjusted = (micros: number) => (micros > 0 ? `+${usd(micros)}` : usd(micros));
const count = (n: number) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
const day = (iso: string) => iso.slice(0, 10);
const minute = (iso: string) => `${iso.slice(0, 16).replace('T', ' ')} UTC`;

function statementTitle(s: StatementView): string {
  return s.number ? `Statement ${s.number}` : `Statement ${s.period} (draft)`;
}

function statementStatus(s: StatementView): string {
  return s.status === 'closed' && s.closedAt
    ? `closed ${minute(s.closedAt)}`
    : `draft, not closed yet: figures as of ${minute(s.asOf)}`;
}

/** The credit movements of a statement, in the order they add up: label, amount as shown. */
function creditRows(s: StatementView): Array<[string, string]> {
  return [
    ['Opening balance', usd(s.openingBalanceMicros)],
    ['Granted (plan and promotional credits)', signed(s.grantedMicros, '+')],
    ['Bought (top-ups)', signed(s.boughtMicros, '+')],
    ['Refunded', signed(s.refundedMicros, '-')],
    ['Adjusted by operators', adjusted(s.adjustedMicros)],
    ['Expired', signed(s.expiredMicros, '-')],
    [`Used (${count(s.settlements)} settled calls)`, signed(s.usedMicros, '-')],
    ['Closing balance', usd(s.closingBalanceMicros)],
  ];
}

function reconciliation(s: StatementView): string {
  return s.reconciled
    ? 'Opening balance plus the movements equals the closing balance, as the ledger records it.'
    : 'WARNING: the movements do not add up to the closing balance recorded by the ledger; the operator has been told.';
}

function usageTable(title: string, head: string, lines: UsageLine[]): string {
  const body = lines.length
    ? lines
        .map(
          (l) =>
            `<tr><td>${escapeHtml(l.name || '(no key)')}</td><td class="n">${count(l.requests)}</td>` +
            `<td class="n">${count(l.inputTokens)}</td><td class="n">${count(l.outputTokens)}</td>` +
            `<td class="n">${count(l.cachedTokens)}</td><td class="n">${escapeHtml(usd(l.costMicros))}</td></tr>`,
        )
        .join('\n')
    : '<tr><td colspan="6">No calls.</td></tr>';
  return `<h2>${escapeHtml(title)}</h2>
<table><thead><tr><th>${escapeHtml(head)}</th><th class="n">Requests</th><th class="n">Input tokens</th><th class="n">Output tokens</th><th class="n">Cached tokens</th><th class="n">Cost</th></tr></thead>
<tbody>${body}</tbody></table>`;
}

const STYLE = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1f24;max-width:52rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.05rem;margin:1.75rem 0 .5rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e1e4e8;vertical-align:top}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.total td{font-weight:600;border-top:2px solid #1b1f24}
.meta th{width:11rem;color:#57606a;font-weight:normal}.muted{color:#57606a}.warn{color:#cf222e;font-weight:600}
@media print{body{margin:0;max-width:none}a{color:inherit}}`;

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
${body}
</body></html>
`;
}

/** A statement as a printable page. */
export function renderStatementHtml(s: StatementView, ctx: RenderContext): string {
  const rows = creditRows(s);
  const credits = rows
    .map(
      ([label, amount], i) =>
        `<tr${i === rows.length - 1 ? ' class="total"' : ''}><td>${escapeHtml(label)}</td><td class="n">${escapeHtml(amount)}</td></tr>`,
    )
    .join('\n');
  const usage = s.usage;
  const usageSummary = `${count(usage.requests)} requests metered at ${usd(usage.costMicros)}.`;
  return page(
    statementTitle(s),
    `<header><h1>${escapeHtml(statementTitle(s))}</h1>${ctx.issuer ? `<p class="muted">Issued by ${escapeHtml(ctx.issuer)}</p>` : ''}</header>
<table class="meta">
<tr><th>Workspace</th><td>${escapeHtml(ctx.workspaceName)} <span class="muted">(${escapeHtml(s.workspaceId)})</span></td></tr>
<tr><th>Period</th><td>${escapeHtml(s.period)}: ${escapeHtml(day(s.periodStart))} to ${escapeHtml(day(s.periodEnd))} (UTC, end excluded)</td></tr>
<tr><th>Status</th><td>${escapeHtml(statementStatus(s))}</td></tr>
<tr><th>Currency</th><td>US dollars, exact to the micro-dollar</td></tr>
</table>
<h2>Credits</h2>
<table><tbody>
${credits}
</tbody></table>
<p class="${s.reconciled ? 'muted' : 'warn'}">${escapeHtml(reconciliation(s))}</p>
${usageTable('Usage by model', 'Model', usage.byModel)}
${usageTable('Usage by API key', 'API key', usage.byKey)}
<p class="muted">${escapeHtml(usageSummary)}</p>
${usage.note ? `<p class="warn">${escapeHtml(usage.note)}</p>` : ''}`,
  );
}

/** A receipt as a printable page. */
export function renderReceiptHtml(r: ReceiptView, ctx: RenderContext): string {
  const rows: Array<[string, string]> = receiptRows(r, ctx);
  return page(
    `Receipt ${r.paymentId}`,
    `<header><h1>Receipt</h1>${ctx.issuer ? `<p class="muted">Issued by ${escapeHtml(ctx.issuer)}</p>` : ''}</header>
<table class="meta">
${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('\n')}
</table>
<p class="muted">Credits bought with a card top-up. Card data never reaches Berth: the payment processor reports the brand and last four digits.</p>`,
  );
}

function receiptRows(r: ReceiptView, ctx: RenderContext): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['Receipt for payment', r.paymentId],
    ['Workspace', `${ctx.workspaceName} (${r.workspaceId})`],
    ['Amount', usd(r.amountMicros)],
    ['Paid', minute(r.paidAt)],
  ];
  if (r.cardBrand || r.cardLast4) {
    rows.push(['Card', [r.cardBrand, r.cardLast4 ? `ending ${r.cardLast4}` : null].filter(Boolean).join(' ')]);
  }
  if (r.balanceAfterMicros !== null) rows.push(['Credits available after it', usd(r.balanceAfterMicros)]);
  return rows;
}

/** The receipt email's text (plain text: the mail carries no HTML). */
export function receiptText(r: ReceiptView, ctx: RenderContext & { url: string }): string {
  const rows = receiptRows(r, ctx);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return [
    `Thank you: ${usd(r.amountMicros)} of credits were added to ${ctx.workspaceName}.`,
    '',
    ...rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}`),
    '',
    `This receipt is also at ${ctx.url}`,
    ctx.issuer ? `Issued by ${ctx.issuer}.` : '',
  ]
    .join('\n')
    .trimEnd();
}

// --- A text-only PDF (PDF 1.4, the standard Courier fonts, WinAnsi text) ---

export type PdfLine = { text: string; bold?: boolean };

const PDF_WIDTH = 90;
const LINES_PER_PAGE = 60;

/** Text as WinAnsi bytes (Latin-1 printable characters as they are, anything else `?`), escaped for a PDF string. */
function pdfString(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0) ?? 63;
    const printable = (c >= 0x20 && c <= 0x7e) || (c >= 0xa0 && c <= 0xff);
    const v = printable ? ch : '?';
    out += v === '\\' || v === '(' || v === ')' ? `\\${v}` : v;
  }
  return `(${out})`;
}

/** Splits a line longer than the page is wide, at spaces where it can (a long word is cut). */
function wrap(line: PdfLine): PdfLine[] {
  const out: PdfLine[] = [];
  let rest = [...line.text];
  while (rest.length > PDF_WIDTH) {
    const space = rest.lastIndexOf(' ', PDF_WIDTH);
    const cut = space > 0 ? space : PDF_WIDTH;
    out.push({ ...line, text: rest.slice(0, cut).join('') });
    rest = rest.slice(space > 0 ? cut + 1 : cut);
  }
  out.push({ ...line, text: rest.join('') });
  return out;
}

/**
 * Lines of text as a valid PDF: A4 pages of 60 lines in Courier 9 pt (longer lines wrap),
 * each page numbered. The cross-reference table is computed from the bytes written, so
 * readers find every object.
 */
export function renderTextPdf(title: string, lines: PdfLine[]): Buffer {
  const all = lines.flatMap(wrap);
  const pages: PdfLine[][] = [];
  for (let i = 0; i < all.length; i += LINES_PER_PAGE) pages.push(all.slice(i, i + LINES_PER_PAGE));
  if (pages.length === 0) pages.push([]);
  const objects: string[] = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    `<< /Type /Pages /Kids [${pages.map((_, i) => `${6 + 2 * i} 0 R`).join(' ')}] /Count ${pages.length} >>`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Courier-Bold /Encoding /WinAnsiEncoding >>',
    `<< /Title ${pdfString(title)} /Producer (Berth) >>`,
  ];
  pages.forEach((chunk, i) => {
    const text = chunk.map((l) => `/${l.bold ? 'F2' : 'F1'} 9 Tf ${pdfString(l.text)} Tj T*`).join('\n');
    const footer = `BT /F1 8 Tf 50 30 Td ${pdfString(`${title} - page ${i + 1} of ${pages.length}`)} Tj ET`;
    const content = `BT\n12 TL\n50 792 Td\n${text}\nET\n${footer}\n`;
    objects.push(
      `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents ${7 + 2 * i} 0 R >>`,
      `<< /Length ${Buffer.byteLength(content, 'latin1')} >>\nstream\n${content}endstream`,
    );
  });
  // Every character written is one byte (latin1), so string lengths are byte offsets.
  let out = '%PDF-1.4\n%\u00e2\u00e3\u00cf\u00d3\n';
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(out.length);
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const o of offsets) out += `${String(o).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R /Info 5 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

function usageRows(title: string, head: string, lines: UsageLine[]): PdfLine[] {
  const row = (a: string, b: string, c: string, d: string, e: string, f: string) =>
    `${a.padEnd(28).slice(0, 28)} ${b.padStart(9)} ${c.padStart(12)} ${d.padStart(12)} ${e.padStart(10)} ${f.padStart(14)}`;
  return [
    { text: '' },
    { text: title, bold: true },
    { text: row(head, 'Requests', 'Input tok', 'Output tok', 'Cached', 'Cost USD') },
    ...(lines.length
      ? lines.map((l) => ({
          text: row(
            l.name || '(no key)',
            count(l.requests),
            count(l.inputTokens),
            count(l.outputTokens),
            count(l.cachedTokens),
            microsToUsd(l.costMicros),
          ),
        }))
      : [{ text: 'No calls.' }]),
    // A name longer than its column is printed in full below the row.
    ...lines.filter((l) => l.name.length > 28).map((l) => ({ text: `  ${head.toLowerCase()}: ${l.name}` })),
  ];
}

/** A statement as a PDF. */
export function renderStatementPdf(s: StatementView, ctx: RenderContext): Buffer {
  const rows = creditRows(s);
  const lines: PdfLine[] = [
    { text: statementTitle(s), bold: true },
    ...(ctx.issuer ? [{ text: `Issued by ${ctx.issuer}` }] : []),
    { text: '' },
    { text: `Workspace: ${ctx.workspaceName} (${s.workspaceId})` },
    { text: `Period:    ${s.period}: ${day(s.periodStart)} to ${day(s.periodEnd)} (UTC, end excluded)` },
    { text: `Status:    ${statementStatus(s)}` },
    { text: '' },
    { text: 'Credits (US dollars)', bold: true },
    ...rows.map(([label, amount], i) => ({
      text: `${label.padEnd(60)}${amount.padStart(28)}`,
      ...(i === rows.length - 1 ? { bold: true } : {}),
    })),
    { text: reconciliation(s) },
    ...usageRows('Usage by model', 'Model', s.usage.byModel),
    ...usageRows('Usage by API key', 'API key', s.usage.byKey),
    { text: '' },
    { text: `${count(s.usage.requests)} requests metered at ${usd(s.usage.costMicros)}.` },
    ...(s.usage.note ? [{ text: s.usage.note }] : []),
  ];
  return renderTextPdf(statementTitle(s), lines);
}
