import type { Command } from 'commander';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { asSignedIn, type SignInOpts, withSignIn } from './privacy.commands.ts';
import { timeArg } from './subprocessors.commands.ts';

/** A retention run as the API answers it. */
type RunView = {
  id: string;
  asOf: string;
  dryRun: boolean;
  trigger: string;
  startedBy: string | null;
  startedAt: string;
  finishedAt: string | null;
  status: string;
  errorCode: string | null;
  results: Array<{
    retentionClass: string;
    table: string;
    rule: string;
    rowsDeleted: number;
    rowsRolledUp: number;
    partitionsDropped: number;
    cutoff: string | null;
  }>;
};

/** What a run removed (or, dry, would remove), per data class and table. */
export function runTable(run: RunView): string {
  const verb = run.dryRun ? 'would remove' : 'removed';
  const head = `Retention ${run.dryRun ? 'dry run' : 'run'} ${run.id} as of ${run.asOf}: ${run.status}`;
  const rows = run.results.map((r) => {
    const what =
      r.rule === 'kept'
        ? 'kept (no time rule declared)'
        : r.rule === 'with_events'
          ? 'follows the audit events'
          : [
              `${r.rowsDeleted} row(s)`,
              r.rowsRolledUp ? `${r.rowsRolledUp} rolled up into daily totals` : '',
              r.partitionsDropped ? `${r.partitionsDropped} monthly partition(s) dropped` : '',
            ]
              .filter(Boolean)
              .join(', ');
    const before = r.cutoff ? ` (older than ${r.cutoff})` : r.rule === 'expired' ? ' (expired or used)' : '';
    return `${r.retentionClass.padEnd(19)}  ${r.table.padEnd(24)}  ${r.rule === 'kept' || r.rule === 'with_events' ? what : `${verb} ${what}${before}`}`;
  });
  return [head, ...rows].join('\n');
}

/**
 * `berth retention run [--dry-run] [--as-of DATE] [--json]` and `berth retention runs`: as an
 * operator, over HTTP against a running server (`--url`, `--email`; the password from the
 * terminal or stdin). `--as-of` previews a future date with `--dry-run`; a removing run
 * dated in the future is refused.
 */
export function registerRetentionCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const retention = program
    .command('retention')
    .description('Retention of every data class of the data map (operators, over HTTP).');

  type RunOpts = SignInOpts & { dryRun?: boolean; asOf?: string };
  withSignIn(
    retention
      .command('run')
      .description('Run retention now, or with --dry-run count what would be removed (changes nothing).')
      .option('--dry-run', 'count what would be removed, remove nothing')
      .option('--as-of <date>', 'apply the windows as of this day or time (a future one only with --dry-run)'),
    'the operator',
  ).action(async (opts: RunOpts) => {
    const asOf = opts.asOf === undefined ? undefined : timeArg(opts.asOf, '--as-of');
    const run = await asSignedIn(io, opts, (s) =>
      s.send<RunView>('POST', '/api/operator/retention/run', {
        dryRun: Boolean(opts.dryRun),
        ...(asOf ? { asOf } : {}),
      }),
    );
    emit(io, Boolean(globals().json), run, runTable(run));
  });

  type ListOpts = SignInOpts & { limit?: string };
  withSignIn(
    retention
      .command('runs')
      .description('The latest retention runs, newest first, with what each removed.')
      .option('--limit <n>', 'how many (1-100, default 20)'),
    'the operator',
  ).action(async (opts: ListOpts) => {
    const limit = opts.limit === undefined ? 20 : Number(opts.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      throw new CliError('--limit: a whole number from 1 to 100.', EXIT.usage, 'usage');
    }
    const list = await asSignedIn(io, opts, (s) =>
      s.get<{ data: RunView[] }>(`/api/operator/retention/runs?limit=${limit}`),
    );
    emit(
      io,
      Boolean(globals().json),
      list.data,
      list.data.length === 0 ? 'No retention runs yet.' : list.data.map(runTable).join('\n\n'),
    );
  });
}
