import type { Command } from 'commander';
import type { TransactionView, VerifyReport } from '../modules/billing/index.ts';
import { microsToUsd, usdToMicros } from '../platform/money.ts';
import { registerStatementCommands } from './billing.statements.commands.ts';
import { registerBudgetCommands } from './budgets.commands.ts';
import { pageQuery } from './gateway.commands.ts';
import { callServer, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { asOperator, type OperatorHttpOpts, withOperatorHttp } from './operator-session.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { withModules } from './runtime.ts';

/** `berth billing verify` exits with this when any balance differs from its ledger. */
export const EXIT_LEDGER_MISMATCH = 7;

type Balance = { workspaceId: string; availableMicros: number; heldMicros: number; plan: string };
type Page<T> = { data: T[]; nextCursor: string | null };

const actor = { type: 'system', name: 'cli' } as const;

/** A signed decimal USD amount as exact micro-units ("-0.50" -> -500000); a usage error otherwise. */
function signedUsdToMicros(text: string, flag: string): number {
  const micros = usdToMicros(text, { signed: true });
  if (micros === null) {
    throw new CliError(
      `${flag}: use a number of US dollars with at most 6 decimals, e.g. 12.50 (got ${text}).`,
      EXIT.usage,
      'invalid_amount',
    );
  }
  if (micros === 0) throw new CliError(`${flag}: the amount cannot be zero.`, EXIT.usage, 'invalid_amount');
  return micros;
}

function entryLine(e: TransactionView): string {
  const sign = e.kind === 'refund' || e.kind === 'reserve' || e.kind === 'expire' ? '-' : '';
  return [
    e.createdAt,
    e.kind.padEnd(8),
    `${sign}${microsToUsd(e.amountMicros)}`.padStart(14),
    `available ${microsToUsd(e.availableAfterMicros)}`,
    e.memo ?? '',
  ]
    .join('  ')
    .trimEnd();
}

function describeReport(r: VerifyReport): string {
  const state = r.ok ? 'ok      ' : 'MISMATCH';
  return `${state}  ${r.workspaceId}: available ${microsToUsd(r.availableMicros)} (postings ${microsToUsd(r.postedAvailableMicros)}), held ${microsToUsd(r.heldMicros)} (postings ${microsToUsd(r.postedHeldMicros)}, open reservations ${microsToUsd(r.openReservationsMicros)}), unbalanced transactions ${r.unbalancedTransactions}`;
}

/**
 * `--expires`: a date (the credits last through that day, UTC: they expire at the next
 * midnight UTC) or an ISO 8601 time with its offset. A usage error otherwise.
 */
function expiryOf(text: string): string {
  const t = text.trim();
  if (/^\d{4}-\d{2}-\d{2}$/.test(t)) {
    const day = new Date(`${t}T00:00:00.000Z`);
    if (!Number.isNaN(day.getTime()) && day.toISOString().slice(0, 10) === t) {
      return new Date(day.getTime() + 24 * 3600_000).toISOString();
    }
  } else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(t)) {
    const at = new Date(t);
    if (!Number.isNaN(at.getTime())) return at.toISOString();
  }
  throw new CliError(
    `--expires: use a date such as 2027-01-31 (the credits last through that day, UTC) or an ISO time with offset (got ${text}).`,
    EXIT.usage,
    'invalid_expiry',
  );
}

/** A fresh key for a one-off operator movement when none is given (a retry should pass the same --idempotency-key). */
const oneOffKey = (what: string) => `cli-${what}-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;

/** `berth billing balance|entries` (over HTTP with an API key) and `berth billing verify` (on the database). */
export function registerBillingCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const billing = program.command('billing').description("A workspace's credits and ledger.");
  const http = (cmd: Command) =>
    cmd
      .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
      .option('--api-key <key>', 'Berth API key with billing:read (BERTH_API_KEY)')
      .option('--workspace <id>', "the workspace (default: the API key's)");

  http(billing.command('balance').description('Credits available and reserved, in USD, and the plan.')).action(
    async (opts: WorkspaceHttpOpts) => {
      const g = globals();
      const { target, workspaceId } = await workspaceOf(opts, io.env);
      const b = await callServer<Balance>(
        target,
        'GET',
        `/api/workspaces/${encodeURIComponent(workspaceId)}/billing/balance`,
      );
      emit(
        io,
        Boolean(g.json),
        b,
        `${b.workspaceId}: ${microsToUsd(b.availableMicros)} USD available, ${microsToUsd(b.heldMicros)} USD reserved for calls in flight (plan ${b.plan}).`,
      );
    },
  );

  http(
    billing
      .command('entries')
      .description('Ledger entries, newest first (amounts in USD).')
      .option('--limit <n>', 'how many (1-1000, default 100)')
      .option('--cursor <id>', 'the next page (the nextCursor of the previous page)'),
  ).action(async (opts: WorkspaceHttpOpts & { limit?: string; cursor?: string }) => {
    const g = globals();
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const qs = pageQuery(opts);
    const page = await callServer<Page<TransactionView>>(
      target,
      'GET',
      `/api/workspaces/${encodeURIComponent(workspaceId)}/billing/entries${qs}`,
    );
    const more = page.nextCursor ? `\n\nMore: add --cursor ${page.nextCursor}` : '';
    emit(io, Boolean(g.json), page, page.data.length ? `${page.data.map(entryLine).join('\n')}${more}` : 'No entries.');
  });

  registerBudgetCommands(billing, http, io, globals);
  registerStatementCommands(billing, http, io, globals);

  const verify = billing
    .command('verify')
    .description(
      `Recompute every balance from the ledger, on the database or (with --url) over HTTP as an operator; exit code ${EXIT_LEDGER_MISMATCH} on any mismatch.`,
    )
    .option('--workspace <id>', 'only this workspace');
  withOperatorHttp(verify).action(async (opts: OperatorHttpOpts & { workspace?: string }) => {
    const g = globals();
    const reports = opts.url
      ? (
          await asOperator(io, { ...opts, url: opts.url }, (s) =>
            s.get<{ reports: VerifyReport[] }>('/api/operator/billing/verify'),
          )
        ).reports.filter((r) => !opts.workspace || r.workspaceId === opts.workspace)
      : await withModules(io, configFor(io, g), 'billing verify', (m) => m.billing.service.verify(opts.workspace));
    const ok = reports.every((r) => r.ok);
    emit(
      io,
      Boolean(g.json),
      { ok, workspaces: reports.length, reports },
      reports.length ? reports.map(describeReport).join('\n') : 'No balances yet.',
    );
    if (!ok) {
      if (!g.json) io.err('berth: some balances differ from the sum of their ledger postings.');
      throw new CliError('', EXIT_LEDGER_MISMATCH, 'ledger_mismatch');
    }
  });
}

/** `berth operator billing grant|adjust` and `berth operator plans set`, on the database directly. */
export function registerOperatorBillingCommands(operator: Command, io: Io, globals: () => GlobalOptions) {
  const billing = operator.command('billing').description("Grant or correct a workspace's credits.");
  type MoveOpts = OperatorHttpOpts & {
    workspace: string;
    amountUsd: string;
    idempotencyKey?: string;
    memo?: string;
    expires?: string;
  };

  const grant = billing
    .command('grant')
    .description('Grant credits to a workspace (audited).')
    .requiredOption('--workspace <id>', 'the workspace')
    .requiredOption('--amount-usd <usd>', 'e.g. 12.50')
    .option('--idempotency-key <key>', 'repeat a grant safely: the same key grants once')
    .option('--memo <text>', 'why (kept with the entry)')
    .option(
      '--expires <date>',
      'promotional credits: what is left of them is taken back after this day (UTC), e.g. 2027-01-31',
    );
  withOperatorHttp(grant).action(async (opts: MoveOpts) => {
    const g = globals();
    const amountMicros = signedUsdToMicros(opts.amountUsd, '--amount-usd');
    const expiresAt = opts.expires === undefined ? undefined : expiryOf(opts.expires);
    if (amountMicros < 0)
      throw new CliError(
        '--amount-usd: a grant is positive; use adjust to take credits away.',
        EXIT.usage,
        'invalid_amount',
      );
    const body = {
      workspaceId: opts.workspace,
      amountMicros,
      idempotencyKey: opts.idempotencyKey ?? oneOffKey('grant'),
      ...(opts.memo === undefined ? {} : { memo: opts.memo }),
      ...(expiresAt === undefined ? {} : { expiresAt }),
    };
    const entry = opts.url
      ? await asOperator(io, { ...opts, url: opts.url }, (s) =>
          s.send<TransactionView & { expiresAt?: string }>('POST', '/api/operator/billing/grant', body),
        )
      : await withModules(io, configFor(io, g), 'operator billing grant', (m) =>
          m.billing.promotions.grant({ actor, ...body }),
        );
    const until = entry.expiresAt ? `, expiring at ${entry.expiresAt}` : '';
    emit(
      io,
      Boolean(g.json),
      entry,
      `Granted ${microsToUsd(entry.amountMicros)} USD to ${entry.workspaceId}${until}: ${microsToUsd(entry.availableAfterMicros)} USD available (${entry.id}).`,
    );
  });

  const adjust = billing
    .command('adjust')
    .description("Correct a workspace's credits up or down, with a reason (audited; never below zero).")
    .requiredOption('--workspace <id>', 'the workspace')
    .requiredOption('--amount-usd <usd>', 'signed: 5 adds, -5 takes away')
    .requiredOption('--memo <text>', 'why')
    .option('--idempotency-key <key>', 'repeat an adjustment safely: the same key adjusts once');
  withOperatorHttp(adjust).action(async (opts: MoveOpts & { memo: string }) => {
    const g = globals();
    const deltaMicros = signedUsdToMicros(opts.amountUsd, '--amount-usd');
    const body = {
      workspaceId: opts.workspace,
      deltaMicros,
      idempotencyKey: opts.idempotencyKey ?? oneOffKey('adjust'),
      memo: opts.memo,
    };
    const entry = opts.url
      ? await asOperator(io, { ...opts, url: opts.url }, (s) =>
          s.send<TransactionView>('POST', '/api/operator/billing/adjust', body),
        )
      : await withModules(io, configFor(io, g), 'operator billing adjust', (m) =>
          m.billing.service.adjust({ actor, ...body }),
        );
    emit(
      io,
      Boolean(g.json),
      entry,
      `Adjusted ${entry.workspaceId} by ${deltaMicros < 0 ? '-' : ''}${microsToUsd(entry.amountMicros)} USD: ${microsToUsd(entry.availableAfterMicros)} USD available (${entry.id}).`,
    );
  });

  const setPlan = operator
    .command('plans')
    .description("Workspaces' plans.")
    .command('set')
    .description("Change a workspace's plan (audited; the history keeps the previous one).")
    .requiredOption('--workspace <id>', 'the workspace')
    .requiredOption('--plan <plan>', 'free, starter, scale or enterprise');
  withOperatorHttp(setPlan).action(async (opts: OperatorHttpOpts & { workspace: string; plan: string }) => {
    const g = globals();
    const plan = opts.url
      ? await asOperator(io, { ...opts, url: opts.url }, (s) =>
          s.send<{ workspaceId: string; plan: string; startedAt: string }>(
            'PUT',
            `/api/operator/workspaces/${encodeURIComponent(opts.workspace)}/plan`,
            { plan: opts.plan },
          ),
        )
      : await withModules(io, configFor(io, g), 'operator plans set', (m) =>
          m.billing.service.setPlan({ actor, workspaceId: opts.workspace, plan: opts.plan }),
        );
    emit(io, Boolean(g.json), plan, `${plan.workspaceId} is on the ${plan.plan} plan since ${plan.startedAt}.`);
  });
}
