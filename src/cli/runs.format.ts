import type { RunView, StepView } from '../modules/agents/index.ts';
import { microsToUsd } from '../platform/money.ts';
import { CliError, EXIT, type Io } from './output.ts';
import type { SseEvent } from './sse.ts';

// How `berth agents run` and `berth runs ...` show runs, their steps and their events.

/**
 * Exit code of `berth agents run` and `berth runs events` when the run waits for a person to
 * approve or deny tool calls (`requires_action`). A completed run exits 0, a run that ended
 * otherwise (failed, cancelled, expired, incomplete) 1.
 */
export const EXIT_RUN_WAITING = 8;

export type Page<T> = { data: T[]; nextCursor: string | null };

/** What a `run.step` event carries (see the agent runs docs). */
type StepEvent = {
  seq: number;
  kind: 'model' | 'tool';
  status: string;
  tool?: string;
  result?: string;
  error?: { code: string; message: string };
  message?: { content: string | null; tool_calls?: Array<{ function: { name: string; arguments: string } }> };
  usage?: { inputTokens: number; outputTokens: number; costMicros: number };
};

/** What the event that ends a run (or pauses it) carries. */
type Ending = {
  status: string;
  stopReason?: string | null;
  error?: { code: string; message: string } | null;
  output?: string | null;
  toolCalls?: Array<{ id: string; name: string; arguments: string }>;
  expiresAt?: string;
};

const ENDINGS = new Set(['completed', 'failed', 'cancelled', 'expired', 'incomplete', 'requires_action']);

const usd = (micros: number) => `${microsToUsd(micros)} USD`;
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** Text on one line, cut at `max` characters (tool arguments and results can be long). */
function oneLine(text: string, max = 200): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

function tokens(input: number, output: number): string {
  return `${input + output} tokens (${input} in, ${output} out)`;
}

export function usageLine(u: {
  inputTokens: number;
  outputTokens: number;
  modelSteps: number;
  toolSteps: number;
  costMicros: number;
}): string {
  return `usage: ${tokens(u.inputTokens, u.outputTokens)}, ${plural(u.modelSteps, 'model step')}, ${plural(u.toolSteps, 'tool step')}, ${usd(u.costMicros)}`;
}

/** `completed (end_turn)`, `failed (llm_error): upstream_error: ...` */
export function endingText(e: Ending): string {
  const reason = e.stopReason ? ` (${e.stopReason})` : '';
  const error = e.error && e.status !== 'completed' ? `: ${e.error.code}: ${e.error.message}` : '';
  return `${e.status}${reason}${error}`;
}

/** A run's view as the ending its events would carry (`lastError` is the ending's `error`). */
export const endingOfRun = (run: RunView): Ending => ({
  status: run.status,
  stopReason: run.stopReason,
  error: run.lastError,
});

function waitingLines(runId: string | null, calls: NonNullable<Ending['toolCalls']>, expiresAt: string): string[] {
  const run = runId ?? 'RUN';
  return [
    `waiting for approval until ${expiresAt}:`,
    ...calls.map((c) => `  ${c.id}  ${c.name}  ${oneLine(c.arguments)}`),
    `approve: berth runs approve ${run} [--tool-call ID]; deny: berth runs deny ${run} [--tool-call ID] [--reason TEXT]`,
    ...(runId ? [] : ['(the run: berth runs list --status requires_action)']),
  ];
}

function stepLine(s: StepView): string {
  const status = s.errorCode ? `${s.status} (${s.errorCode})` : s.status;
  const used = s.kind === 'model' ? tokens(s.inputTokens, s.outputTokens) : '-';
  const latency = s.latencyMs === null ? '-' : `${s.latencyMs} ms`;
  return `  ${String(s.seq).padStart(3)}  ${s.kind.padEnd(5)}  ${(s.toolName ?? '-').padEnd(20)}  ${status.padEnd(22)}  ${used.padEnd(30)}  ${latency}`;
}

export function runUsage(run: RunView) {
  return { ...run.usage, costMicros: run.costMicros };
}

/** The result of a run for people: output, steps, usage, then its status (and what it waits for). */
export function runReport(run: RunView, steps: StepView[] | null): string {
  const lines: string[] = [];
  if (run.output) lines.push(run.output, '');
  if (steps) lines.push('steps:', ...(steps.length ? steps.map(stepLine) : ['  none']));
  lines.push(usageLine(runUsage(run)));
  if (run.requiredAction)
    lines.push(...waitingLines(run.id, run.requiredAction.toolCalls, run.requiredAction.expiresAt));
  lines.push(`${run.id} ${endingText(endingOfRun(run))}`);
  return lines.join('\n');
}

function inputText(input: RunView['input']): string {
  if (typeof input === 'string') return oneLine(input);
  const last = input[input.length - 1];
  return `${plural(input.length, 'message')}, last (${last?.role}): ${oneLine(last?.content ?? '')}`;
}

export function describeRun(run: RunView, steps: StepView[] | null): string {
  const times = [
    `created ${run.createdAt}`,
    run.startedAt && `started ${run.startedAt}`,
    run.completedAt && `ended ${run.completedAt}`,
  ];
  const lines = [
    `${run.id}  ${endingText(endingOfRun(run))}`,
    `agent:    ${run.agentId} v${run.agentVersion}`,
    `time:     ${times.filter(Boolean).join(', ')}`,
    ...(run.previousRunId ? [`previous: ${run.previousRunId}`] : []),
    `input:    ${inputText(run.input)}`,
    `${usageLine(runUsage(run)).replace(/^usage: /, 'usage:    ')}`,
  ];
  if (run.requiredAction)
    lines.push(...waitingLines(run.id, run.requiredAction.toolCalls, run.requiredAction.expiresAt));
  if (steps) lines.push('steps:', ...(steps.length ? steps.map(stepLine) : ['  none']));
  if (run.output !== null) lines.push('output:', run.output);
  return lines.join('\n');
}

export function listLine(r: RunView): string {
  return `${r.id}  ${r.status.padEnd(15)}  ${(r.stopReason ?? '-').padEnd(20)}  ${`${r.agentId} v${r.agentVersion}`.padEnd(34)}  ${String(r.usage.totalTokens).padStart(8)} tokens  ${usd(r.costMicros).padStart(14)}  ${r.createdAt}`;
}

/** Exit code for a run's status: 0 completed (or not ended), 8 waiting for approval, 1 ended otherwise. */
export function exitFor(status: string): void {
  if (status === 'requires_action') throw new CliError('', EXIT_RUN_WAITING, 'run_requires_action');
  if (ENDINGS.has(status) && status !== 'completed') throw new CliError('', EXIT.failure, `run_${status}`);
}

/**
 * Prints a run's events as they come: with --json one JSON object per line, otherwise a
 * line per step (a model call with its tokens and the tools it calls, a tool call with its
 * result), the output once the run ends. Adds up the model calls' usage as it goes.
 */
export function eventPrinter(io: Io, json: boolean, runId: string | null) {
  const totals = { inputTokens: 0, outputTokens: 0, costMicros: 0, modelSteps: 0, toolSteps: 0 };
  let ending: Ending | null = null;
  function human(e: SseEvent) {
    const d = (e.data ?? {}) as Record<string, unknown>;
    switch (e.event) {
      case 'run.created': {
        const dropped = Number(d.contextTurnsDropped ?? 0);
        const note = dropped > 0 ? ` (${plural(dropped, 'earlier turn')} left out to fit the context window)` : '';
        io.out(`queued: agent ${String(d.agentId)} v${String(d.agentVersion)}${note}`);
        return;
      }
      case 'run.in_progress': {
        const attempt = Number(d.attempt ?? 1);
        io.out(attempt > 1 ? `in progress (attempt ${attempt})` : 'in progress');
        return;
      }
      case 'run.queued':
        io.out('queued');
        return;
      case 'run.approved':
      case 'run.denied': {
        const ids = Array.isArray(d.toolCallIds) ? d.toolCallIds.join(', ') : '';
        io.out(`${e.event === 'run.approved' ? 'approved' : 'denied'}: ${ids}`);
        return;
      }
      case 'run.step': {
        const s = e.data as StepEvent;
        if (s.kind === 'model') {
          const u = s.usage ?? { inputTokens: 0, outputTokens: 0, costMicros: 0 };
          io.out(`step ${s.seq}  model  ${tokens(u.inputTokens, u.outputTokens)}, ${usd(u.costMicros)}`);
          const calls = s.message?.tool_calls ?? [];
          if (calls.length > 0 && s.message?.content) io.out(`  says: ${oneLine(s.message.content)}`);
          for (const c of calls) io.out(`  calls ${c.function.name} ${oneLine(c.function.arguments)}`);
        } else {
          const status = s.error ? `${s.status} (${s.error.code})` : s.status;
          io.out(`step ${s.seq}  tool   ${s.tool ?? '-'}  ${status}: ${oneLine(s.result ?? '')}`);
        }
        return;
      }
      case 'run.requires_action': {
        const a = e.data as Ending;
        io.out(waitingLines(runId, a.toolCalls ?? [], a.expiresAt ?? '?').join('\n'));
        return;
      }
      default:
        if (e.event.startsWith('run.') && ENDINGS.has(e.event.slice(4))) {
          const end = e.data as Ending;
          if (end.output) io.out(`\n${end.output}\n`);
          return;
        }
        io.out(`${e.event}: ${oneLine(JSON.stringify(e.data))}`);
    }
  }
  return {
    totals,
    ending: () => ending,
    print(e: SseEvent) {
      if (e.event === 'error') {
        const err = (e.data ?? {}) as { code?: string; message?: string };
        throw new CliError(err.message ?? 'The event stream failed.', EXIT.failure, err.code ?? 'stream_failed');
      }
      if (e.event === 'run.step') {
        const s = e.data as StepEvent;
        if (s.kind === 'model') {
          totals.modelSteps += 1;
          totals.inputTokens += s.usage?.inputTokens ?? 0;
          totals.outputTokens += s.usage?.outputTokens ?? 0;
          totals.costMicros += s.usage?.costMicros ?? 0;
        } else totals.toolSteps += 1;
      }
      const status = (e.data as { status?: unknown } | null)?.status;
      if (typeof status === 'string') ending = ENDINGS.has(status) ? (e.data as Ending) : null;
      if (json) io.out(JSON.stringify({ id: e.id, event: e.event, data: e.data }));
      else human(e);
    },
  };
}
