import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { microsToUsd, usdToMicros } from '../platform/money.ts';
import { pageQuery } from './gateway.commands.ts';
import { callServer, refusal, type ServerTarget, sendRequest, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';

type Summary = {
  period: string;
  number: string | null;
  status: 'closed' | 'draft';
  openingBalanceMicros: number;
  closingBalanceMicros: number;
  boughtMicros: number;
  usedMicros: number;
  reconciled: boolean;
};
type Line = { name: string; requests: number; inputTokens: number; outputTokens: number; costMicros: number };
type Statement = Summary & {
  asOf: string;
  grantedMicros: number;
  refundedMicros: number;
  adjustedMicros: number;
  expiredMicros: number;
  settlements: number;
  usage: { requests: number; costMicros: number; note: string | null; byModel: Line[]; byKey: Line[] };
};
type Usage = {
  from: string;
  to: string;
  groupBy: string;
  requests: number;
  costMicros: number;
  data: Array<{ group: string; requests: number; inputTokens: number; outputTokens: number; costMicros: number }>;
};

const GROUPS = ['day', 'model', 'key', 'provider'];

const usd = (m: number) => `${microsToUsd(m)} USD`;

function summaryLine(s: Summary): string {
  const name = s.number ?? `${s.period} (draft)`;
  return [
    s.period,
    name.padEnd(24),
    `opening ${microsToUsd(s.openingBalanceMicros)}`.padEnd(20),
    `bought ${microsToUsd(s.boughtMicros)}`.padEnd(19),
    `used ${microsToUsd(s.usedMicros)}`.padEnd(19),
    `closing ${microsToUsd(s.closingBalanceMicros)} USD`,
    s.reconciled ? '' : ' DOES NOT RECONCILE',
  ]
    .join('  ')
    .trimEnd();
}

function statementText(s: Statement): string {
  const rows: Array<[string, string]> = [
    ['Opening balance', usd(s.openingBalanceMicros)],
    ['Granted', usd(s.grantedMicros)],
    ['Bought', usd(s.boughtMicros)],
    ['Refunded', usd(-s.refundedMicros)],
    ['Adjusted', usd(s.adjustedMicros)],
    ['Expired', usd(-s.expiredMicros)],
    [`Used (${s.settlements} calls)`, usd(-s.usedMicros)],
    ['Closing balance', usd(s.closingBalanceMicros)],
  ];
  const head = s.number
    ? `Statement ${s.number} (${s.period}, closed)`
    : `Statement ${s.period} (draft as of ${s.asOf})`;
  const models = s.usage.byModel.map(
    (l) => `  ${l.name.padEnd(30)} ${String(l.requests).padStart(8)} requests  ${usd(l.costMicros)}`,
  );
  return [
    head,
    ...rows.map(([k, v]) => `  ${k.padEnd(24)}${v.padStart(22)}`),
    ...(s.reconciled ? [] : ['WARNING: the movements do not add up to the closing balance.']),
    'By model:',
    ...(models.length ? models : ['  no calls']),
    ...(s.usage.note ? ['', s.usage.note] : []),
  ].join('\n');
}

/** A document the server renders (HTML or PDF), as bytes; its errors as `callServer`'s are. */
async function download(target: ServerTarget, path: string): Promise<Buffer> {
  const a = await sendRequest(target.url, path, 'GET', {
    headers: target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {},
  });
  if (a.status !== 200) throw refusal(a, `GET ${path}`);
  return a.body;
}

function save(file: string, bytes: Buffer) {
  try {
    writeFileSync(file, bytes);
  } catch (err) {
    throw new CliError(`Cannot write ${file}: ${(err as Error).message}`, EXIT.failure, 'write_failed');
  }
}

/**
 * `berth billing invoices|invoice|usage|topup`: statements, their HTML and PDF, the
 * usage-cost breakdown and the top-up link, over HTTP.
 */
export function registerStatementCommands(
  billing: Command,
  http: (cmd: Command) => Command,
  io: Io,
  globals: () => GlobalOptions,
) {
  const base = (workspaceId: string) => `/api/workspaces/${encodeURIComponent(workspaceId)}/billing`;

  http(
    billing
      .command('invoices')
      .description("Monthly statements, newest first, starting with this month's draft (USD).")
      .option('--limit <n>', 'how many closed statements (1-100, default 24)')
      .option('--cursor <period>', 'the next page (the nextCursor of the previous page)'),
  ).action(async (opts: WorkspaceHttpOpts & { limit?: string; cursor?: string }) => {
    const g = globals();
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const qs = pageQuery(opts);
    const page = await callServer<{ data: Summary[]; nextCursor: string | null }>(
      target,
      'GET',
      `${base(workspaceId)}/invoices${qs}`,
    );
    const more = page.nextCursor ? `\n\nMore: add --cursor ${page.nextCursor}` : '';
    emit(io, Boolean(g.json), page, `${page.data.map(summaryLine).join('\n')}${more}`);
  });

  http(
    billing
      .command('invoice')
      .description("One month's statement (PERIOD is YYYY-MM); saves its HTML page or PDF with --html/--pdf.")
      .argument('<period>', 'the month, e.g. 2026-03')
      .option('--html <file>', 'save the printable HTML page to FILE')
      .option('--pdf <file>', 'save the PDF to FILE'),
  ).action(async (period: string, opts: WorkspaceHttpOpts & { html?: string; pdf?: string }) => {
    const g = globals();
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const path = `${base(workspaceId)}/invoices/${encodeURIComponent(period)}`;
    const s = await callServer<Statement>(target, 'GET', path);
    const saved: string[] = [];
    for (const [format, file] of [
      ['html', opts.html],
      ['pdf', opts.pdf],
    ] as const) {
      if (!file) continue;
      save(file, await download(target, `${path}/${format}`));
      saved.push(`Saved the ${format.toUpperCase()} to ${file}.`);
    }
    emit(io, Boolean(g.json), s, [statementText(s), ...(saved.length ? ['', ...saved] : [])].join('\n'));
  });

  http(
    billing
      .command('usage')
      .description('Cost and usage between two days (UTC, both included), grouped by day, model, key or provider.')
      .option('--from <day>', 'first day, YYYY-MM-DD (default: the first of this month)')
      .option('--to <day>', 'last day, YYYY-MM-DD (default: today)')
      .option('--group-by <what>', 'day, model, key or provider (default day)'),
  ).action(async (opts: WorkspaceHttpOpts & { from?: string; to?: string; groupBy?: string }) => {
    const g = globals();
    if (opts.groupBy && !GROUPS.includes(opts.groupBy)) {
      throw new CliError(`--group-by: use ${GROUPS.join(', ')} (got ${opts.groupBy}).`, EXIT.usage, 'invalid_usage');
    }
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const query = new URLSearchParams();
    if (opts.from) query.set('from', opts.from);
    if (opts.to) query.set('to', opts.to);
    if (opts.groupBy) query.set('groupBy', opts.groupBy);
    const qs = query.toString() ? `?${query}` : '';
    const u = await callServer<Usage>(target, 'GET', `${base(workspaceId)}/usage${qs}`);
    const lines = u.data.map(
      (d) =>
        `${(d.group || '(no key)').padEnd(32)} ${String(d.requests).padStart(9)} requests ${String(d.inputTokens).padStart(12)} in ${String(d.outputTokens).padStart(12)} out  ${usd(d.costMicros)}`,
    );
    emit(
      io,
      Boolean(g.json),
      u,
      [
        `${u.from} to ${u.to} by ${u.groupBy}: ${u.requests} requests, ${usd(u.costMicros)}`,
        ...(lines.length ? lines : ['No calls.']),
      ].join('\n'),
    );
  });

  http(
    billing
      .command('topup')
      .description('Start a card top-up: prints the payment page to pay on (workspace owners).')
      .requiredOption('--amount-usd <usd>', 'whole cents from 1 to 10000, e.g. 25'),
  ).action(async (opts: WorkspaceHttpOpts & { amountUsd: string }) => {
    const g = globals();
    const amountMicros = usdToMicros(opts.amountUsd);
    if (amountMicros === null || amountMicros < 1_000_000 || amountMicros > 10_000_000_000 || amountMicros % 10_000) {
      throw new CliError(
        `--amount-usd: a top-up is a whole number of cents from 1 to 10000 USD, e.g. 25 or 12.50 (got ${opts.amountUsd}).`,
        EXIT.usage,
        'invalid_amount',
      );
    }
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    let checkout: { paymentId: string; url: string; amountMicros: number };
    try {
      checkout = await callServer(target, 'POST', `${base(workspaceId)}/checkout`, { amountMicros });
    } catch (err) {
      if (err instanceof CliError && (err.code === 'forbidden' || err.code === 'insufficient_scope')) {
        throw new CliError(
          `Buying credits is for the workspace's owners, and no API key scope covers it: start the top-up from the dashboard's Billing page while signed in as an owner. (${err.message})`,
          err.exitCode,
          err.code,
        );
      }
      throw err;
    }
    emit(
      io,
      Boolean(g.json),
      checkout,
      `Pay ${usd(checkout.amountMicros)} at:\n${checkout.url}\n\nThe credits arrive once the payment is confirmed (payment ${checkout.paymentId}).`,
    );
  });
}
