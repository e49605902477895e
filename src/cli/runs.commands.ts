import type { Command } from 'commander';
import type { RunView, StepView } from '../modules/agents/index.ts';
import { parsePositiveInt } from './gateway.commands.ts';
import { callServer, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import {
  describeRun,
  EXIT_RUN_WAITING,
  endingOfRun,
  endingText,
  eventPrinter,
  exitFor,
  listLine,
  type Page,
  runReport,
  runUsage,
  usageLine,
} from './runs.format.ts';
import { followEvents, jsonBody, longRequest, sseEvents } from './sse.ts';

export { EXIT_RUN_WAITING } from './runs.format.ts';

async function runsOf(opts: WorkspaceHttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}/runs` };
}

const ref = (id: string) => `/${encodeURIComponent(id)}`;

async function readStdin(io: Io): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

function parseAfter(text: string): number {
  if (!/^\d{1,15}$/.test(text.trim())) {
    throw new CliError(`--after: an event number (0, 1, 2...), not ${text}.`, EXIT.usage, 'invalid_number');
  }
  return Number(text.trim());
}

function withHttp(cmd: Command, scopes: string): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', `API key (BERTH_API_KEY) with ${scopes}`)
    .option('--workspace <id>', "the workspace (default: the API key's)");
}

type RunOpts = WorkspaceHttpOpts & {
  input: string;
  agentVersion?: string;
  previousRun?: string;
  stream?: boolean;
  background?: boolean;
};

/**
 * `berth agents run AGENT --input TEXT`: runs an agent's published version and prints its
 * output, steps and usage (`--stream`: its events as they come; `--background`: queued, at
 * once). Exit 0 completed, 8 waiting for approval, 1 ended otherwise.
 */
export function registerAgentRunCommand(agents: Command, io: Io, globals: () => GlobalOptions) {
  const json = () => Boolean(globals().json);
  withHttp(
    agents
      .command('run')
      .description(
        `Run an agent on an input and print its output, steps and usage; exit 0 completed, ${EXIT_RUN_WAITING} waiting for approval, 1 ended otherwise (failed, cancelled, expired, incomplete).`,
      )
      .requiredOption('--input <text>', 'what the run answers (customer content); - reads standard input')
      .option('--agent-version <n>', 'a published version (default: the latest)')
      .option('--previous-run <id>', 'a finished run this one continues (its conversation comes first)')
      .option('--stream', 'print the events as they come (with --json: one JSON event per line)')
      .option('--background', 'queue the run and print it at once (follow it with berth runs events)'),
    'agents:run (and agents:read for the steps)',
  )
    .argument('<agent>', 'the agent name or id (agt_...)')
    .action(async (agent: string, opts: RunOpts) => {
      if (opts.stream && opts.background) {
        throw new CliError('--stream and --background cannot go together.', EXIT.usage, 'invalid_usage');
      }
      const version =
        opts.agentVersion === undefined ? undefined : parsePositiveInt(opts.agentVersion, '--agent-version');
      const input = opts.input === '-' ? await readStdin(io) : opts.input;
      if (input === '') throw new CliError('--input: the input is empty.', EXIT.usage, 'invalid_input');
      const { target, base } = await runsOf(opts, io);
      const body = {
        agent,
        input,
        ...(version ? { version } : {}),
        ...(opts.previousRun ? { previous_run_id: opts.previousRun } : {}),
        ...(opts.stream ? { stream: true } : {}),
        ...(opts.background ? { background: true } : {}),
      };

      if (opts.background) {
        const run = await callServer<RunView>(target, 'POST', base, body);
        emit(
          io,
          json(),
          run,
          `Queued ${run.id} (${run.agentId} v${run.agentVersion}); follow it: berth runs events ${run.id}`,
        );
        return;
      }

      if (opts.stream) {
        const printer = eventPrinter(io, json(), null);
        const res = await longRequest(target, 'POST', base, { body, headers: { accept: 'text/event-stream' } });
        try {
          for await (const e of sseEvents(res.body)) printer.print(e);
        } catch (err) {
          res.body.destroy();
          if (err instanceof CliError) throw err;
          throw new CliError(
            'The stream broke before the run ended; the run goes on (berth runs list shows it).',
            EXIT.unreachable,
            'stream_broken',
          );
        }
        const end = printer.ending();
        if (!end) throw new CliError('The stream ended before the run did.', EXIT.failure, 'stream_incomplete');
        if (!json()) io.out(`${usageLine(printer.totals)}\n${endingText(end)}`);
        exitFor(end.status);
        return;
      }

      const run = await jsonBody<RunView>(await longRequest(target, 'POST', base, { body }));
      if (json()) io.out(JSON.stringify(run, null, 2));
      else {
        let steps: StepView[] | null = null;
        try {
          steps = (await callServer<{ data: StepView[] }>(target, 'GET', `${base}${ref(run.id)}/steps`)).data;
        } catch (err) {
          if (!(err instanceof CliError) || err.code !== 'insufficient_scope') throw err;
          io.err('berth: steps not shown: the API key lacks agents:read.');
        }
        io.out(runReport(run, steps));
      }
      exitFor(run.status);
    });
}

/** `berth runs list|get|cancel|approve|deny|events` over HTTP with an API key. */
export function registerRunsCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const json = () => Boolean(globals().json);
  const runs = program
    .command('runs')
    .description("Agent runs of a workspace, over HTTP (the workspace is the calling key's unless --workspace).");

  withHttp(
    runs
      .command('list')
      .description('List runs, newest first: id, status, stop reason, agent and version, tokens, cost, created.')
      .option('--agent <agent>', 'only runs of this agent (name or id)')
      .option('--status <status>', 'only runs in this status (queued, in_progress, requires_action, completed...)')
      .option('--limit <n>', 'how many (1-200, default 50)')
      .option('--cursor <id>', 'the next page (the nextCursor of the previous page)'),
    'agents:read',
  ).action(async (opts: WorkspaceHttpOpts & { agent?: string; status?: string; limit?: string; cursor?: string }) => {
    const { target, base } = await runsOf(opts, io);
    const query = new URLSearchParams();
    if (opts.agent) query.set('agent', opts.agent);
    if (opts.status) query.set('status', opts.status);
    if (opts.limit) query.set('limit', String(parsePositiveInt(opts.limit, '--limit')));
    if (opts.cursor) query.set('cursor', opts.cursor);
    const page = await callServer<Page<RunView>>(target, 'GET', `${base}${query.size ? `?${query}` : ''}`);
    const more = page.nextCursor ? `\n\nMore: add --cursor ${page.nextCursor}` : '';
    emit(io, json(), page, page.data.length ? `${page.data.map(listLine).join('\n')}${more}` : 'No runs.');
  });

  withHttp(
    runs
      .command('get')
      .description('Show a run: status, stop reason, error, usage and cost, what it waits for, its output.')
      .option('--steps', 'also its steps (each model call and tool call)'),
    'agents:read',
  )
    .argument('<run>', 'the run id (run_...)')
    .action(async (id: string, opts: WorkspaceHttpOpts & { steps?: boolean }) => {
      const { target, base } = await runsOf(opts, io);
      const run = await callServer<RunView>(target, 'GET', `${base}${ref(id)}`);
      const steps = opts.steps
        ? (await callServer<{ data: StepView[] }>(target, 'GET', `${base}${ref(id)}/steps`)).data
        : null;
      emit(io, json(), steps ? { ...run, steps } : run, describeRun(run, steps));
    });

  withHttp(
    runs.command('cancel').description('Cancel a run that has not ended (exit 4 run_finished once it has).'),
    'agents:run',
  )
    .argument('<run>', 'the run id (run_...)')
    .action(async (id: string, opts: WorkspaceHttpOpts) => {
      const { target, base } = await runsOf(opts, io);
      const run = await callServer<RunView>(target, 'POST', `${base}${ref(id)}/cancel`);
      emit(
        io,
        json(),
        run,
        run.status === 'cancelled'
          ? `Cancelled ${run.id}.`
          : `Asked ${run.id} to stop; it is ${run.status} and stops at its next step.`,
      );
    });

  for (const approve of [true, false]) {
    const cmd = runs
      .command(approve ? 'approve' : 'deny')
      .description(
        approve
          ? 'Approve a tool call the run waits for (default: every one), optionally with edited arguments.'
          : 'Deny a tool call the run waits for (default: every one); the model is told, with the reason.',
      )
      .option('--tool-call <id>', 'the tool call (default: every call the run waits for)');
    if (approve) cmd.option('--arguments <json>', 'run the call with these arguments instead (a JSON object)');
    else cmd.option('--reason <text>', 'why, told to the model');
    withHttp(cmd, 'agents:run')
      .argument('<run>', 'the run id (run_...)')
      .action(
        async (id: string, opts: WorkspaceHttpOpts & { toolCall?: string; arguments?: string; reason?: string }) => {
          const { target, base } = await runsOf(opts, io);
          const run = await callServer<RunView>(target, 'POST', `${base}${ref(id)}/${approve ? 'approve' : 'deny'}`, {
            ...(opts.toolCall ? { tool_call_id: opts.toolCall } : {}),
            ...(opts.arguments !== undefined ? { arguments: opts.arguments } : {}),
            ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
          });
          const what = `${approve ? 'Approved' : 'Denied'} ${opts.toolCall ?? 'every waiting tool call'} of ${run.id}`;
          const next = run.requiredAction
            ? `; it still waits for ${run.requiredAction.toolCalls.map((c) => c.id).join(', ')}.`
            : `; it is ${run.status} (follow it: berth runs events ${run.id}).`;
          emit(io, json(), run, `${what}${next}`);
        },
      );
  }

  withHttp(
    runs
      .command('events')
      .description(
        `Follow a run's events until it ends or waits for approval, resuming after a broken connection; exit 0 completed, ${EXIT_RUN_WAITING} waiting for approval, 1 ended otherwise.`,
      )
      .option('--after <n>', 'only events after this number (default 0: every event)'),
    'agents:read',
  )
    .argument('<run>', 'the run id (run_...)')
    .action(async (id: string, opts: WorkspaceHttpOpts & { after?: string }) => {
      const after = opts.after === undefined ? 0 : parseAfter(opts.after);
      const { target, base } = await runsOf(opts, io);
      const printer = eventPrinter(io, json(), id);
      await followEvents(target, `${base}${ref(id)}/events`, after, (e) => printer.print(e));
      // The stream may start after the run's first steps: its totals come from the run itself.
      const run = await callServer<RunView>(target, 'GET', `${base}${ref(id)}`);
      if (!json()) io.out(`${usageLine(runUsage(run))}\n${run.id} ${endingText(endingOfRun(run))}`);
      exitFor(run.status);
    });
}
