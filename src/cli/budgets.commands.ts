import type { Command } from 'commander';
import { microsToUsd, usdToMicros } from '../platform/money.ts';
import { callServer, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';

type Budget = {
  id: string;
  keyId: string | null;
  period: 'day' | 'month';
  limitMicros: number;
  current: { start: string; end: string; spentMicros: number; heldMicros: number; remainingMicros: number };
};

function budgetLine(b: Budget): string {
  const whose = b.keyId ? `key ${b.keyId}` : 'workspace';
  const c = b.current;
  return `${b.id}  ${whose.padEnd(34)}  ${b.period.padEnd(5)}  limit ${microsToUsd(b.limitMicros)} USD, spent ${microsToUsd(c.spentMicros)}, in flight ${microsToUsd(c.heldMicros)}, left ${microsToUsd(c.remainingMicros)} (until ${c.end})`;
}

/**
 * `berth billing budgets` and `berth billing budget set|remove`: spend limits of a
 * workspace or one of its API keys, per day or month, over HTTP.
 */
export function registerBudgetCommands(
  billing: Command,
  http: (cmd: Command) => Command,
  io: Io,
  globals: () => GlobalOptions,
) {
  const path = (workspaceId: string) => `/api/workspaces/${encodeURIComponent(workspaceId)}/billing/budgets`;

  http(
    billing.command('budgets').description("The workspace's and its keys' budgets, with this period's spending."),
  ).action(async (opts: WorkspaceHttpOpts) => {
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const list = await callServer<{ data: Budget[] }>(target, 'GET', path(workspaceId));
    emit(io, Boolean(globals().json), list, list.data.length ? list.data.map(budgetLine).join('\n') : 'No budgets.');
  });

  const budget = billing
    .command('budget')
    .description('Set or remove a spend limit (needs budgets:manage: owners, admins, workspace:admin keys).');
  http(
    budget
      .command('set')
      .description('Set the daily or monthly budget of the workspace, or of one API key with --key.')
      .requiredOption('--period <day|month>', 'a UTC day or a calendar month')
      .requiredOption('--limit-usd <usd>', 'the most the period may spend, e.g. 50')
      .option('--key <keyId>', 'limit only this API key'),
  ).action(async (opts: WorkspaceHttpOpts & { period: string; limitUsd: string; key?: string }) => {
    if (opts.period !== 'day' && opts.period !== 'month') {
      throw new CliError(`--period: day or month (got ${opts.period}).`, EXIT.usage, 'invalid_period');
    }
    const limitMicros = usdToMicros(opts.limitUsd);
    if (limitMicros === null || limitMicros <= 0) {
      throw new CliError(
        `--limit-usd: a positive number of US dollars with at most 6 decimals (got ${opts.limitUsd}).`,
        EXIT.usage,
        'invalid_amount',
      );
    }
    const { target, workspaceId } = await workspaceOf(opts, io.env);
    const saved = await callServer<Budget>(target, 'PUT', path(workspaceId), {
      period: opts.period,
      limitMicros,
      ...(opts.key ? { keyId: opts.key } : {}),
    });
    emit(io, Boolean(globals().json), saved, `Set: ${budgetLine(saved)}`);
  });

  http(budget.command('remove').description('Remove a budget.').argument('<budgetId>')).action(
    async (budgetId: string, opts: WorkspaceHttpOpts) => {
      const { target, workspaceId } = await workspaceOf(opts, io.env);
      await callServer(target, 'DELETE', `${path(workspaceId)}/${encodeURIComponent(budgetId)}`);
      emit(io, Boolean(globals().json), { removed: budgetId }, `Removed ${budgetId}.`);
    },
  );
}
