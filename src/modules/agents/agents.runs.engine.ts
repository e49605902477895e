import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Caller, ChatCompletionRequest, ChatMessage, ToolCall, UsageEventRow } from '../gateway/index.ts';
import { inputEstimateOf } from '../gateway/index.ts';
import type { VaultService } from '../vault/index.ts';
import type { NewEvent, RunPatch, runsRepo } from './agents.runs.repo.ts';
import {
  type AgentRunRow,
  type AgentRunStepRow,
  type RunStatus,
  runField,
  type StopReason,
} from './agents.runs.tables.ts';
import type { AgentDefinition } from './agents.schemas.ts';
import type { Tool, ToolResult } from './agents.tools.core.ts';

/** Who a run's model calls are made as: the gateway's caller, from the run and its key. */
export type RunCaller = Caller;

/** Tool calls waiting for a person, and what was decided on them (run.pending, encrypted). */
export type Pending = {
  calls: Array<{ id: string; name: string; arguments: string }>;
  decisions: Record<string, { approved: boolean; arguments?: string; reason?: string }>;
};

/** What a tool step's content holds. */
type ToolStepContent = { arguments: string; result: string };

export type EngineSettings = {
  /** How long a lease lasts without a heartbeat. */
  leaseMs: number;
  heartbeatMs: number;
  /** How long a run waits for an approval before it expires. */
  approvalTtlMs: number;
  /** Failed tool calls a run hands back to the model before it fails with tool_error. */
  maxToolFailures: number;
  /** Output tokens a model call may ask for when the agent sets no max_output_tokens. */
  defaultMaxOutputTokens: number;
  /** Takeovers of a run whose worker died before it expires instead (with last_error run_lost). */
  maxAttempts: number;
};

export type EngineDeps = {
  db: Db;
  repo: typeof runsRepo;
  clock: Clock;
  logger: Logger;
  vault: Pick<VaultService, 'encrypt' | 'decryptString'>;
  /** This worker's name in leases. */
  owner: string;
  settings: EngineSettings;
  /** The pinned version's definition. */
  definitionOf(tx: Database, workspaceId: string, agentId: string, version: number): Promise<AgentDefinition | null>;
  resolveTools(workspaceId: string, defs: AgentDefinition['tools']): Promise<Tool[]>;
  /** One metered model call (the gateway's `complete`). */
  complete(
    caller: RunCaller,
    body: ChatCompletionRequest,
    signal: AbortSignal,
  ): Promise<{
    response: { choices: Array<{ message: ChatMessage; finish_reason: string | null }> };
    usage: UsageEventRow;
  }>;
  /** The key's live policy (null: revoked or expired). */
  keyPolicy(
    workspaceId: string,
    keyId: string,
  ): Promise<Omit<RunCaller, 'workspaceId' | 'keyId' | 'userId' | 'requestId'> | null>;
  /** Throws AppError `processing_restricted` while the user restricted processing of their data. */
  assertProcessingAllowed(userId: string): void;
  /** Whether the member who started a run (or whose key did) may still run agents in the workspace. */
  mayRun(workspaceId: string, userId: string): Promise<boolean>;
  /** The context window of a model the workspace calls (null: unknown). */
  contextWindow(workspaceId: string, model: string): Promise<number | null>;
  /** Tells followers of the run (SSE) that events were appended. */
  notify(runId: string): void;
};

// The vault context of one piece of a run's content; the data map's export decrypts with it too.
export { runField };

/** Why a run stops, as its status, stop reason and last error. */
export type Ending = {
  status: Extract<RunStatus, 'completed' | 'failed' | 'cancelled' | 'expired' | 'incomplete'>;
  stopReason: StopReason | null;
  error?: { code: string; message: string };
  output?: string;
};

/** Thrown inside a run to end it with `ending`. */
export class RunStop extends Error {
  constructor(readonly ending: Ending) {
    super(ending.stopReason ?? ending.status);
  }
}

/** The lease went to another worker: stop writing at once. */
class LeaseLost extends Error {}

/** A tool as a model call lists it (OpenAI's function tool). */
export function toolSpec(t: Pick<Tool, 'name' | 'description' | 'parameters'>) {
  return {
    type: 'function' as const,
    function: { name: t.name, description: t.description, parameters: t.parameters as Record<string, unknown> },
  };
}

/** A token estimate (4 characters a token) of messages, as the gateway makes it. */
export function estimateMessages(messages: ChatMessage[]): number {
  return inputEstimateOf(messages);
}

function toolContent(result: ToolResult): string {
  return result.ok ? result.content : JSON.stringify({ error: result.error });
}

/**
 * Executes runs: claims a run's lease, rebuilds its conversation from the steps already
 * persisted (a run resumed after a crash goes on where it stopped), and loops model call,
 * tool calls, model call... until the model answers without tools, a tool waits for a
 * person, or a limit is reached. Every step and event is written under the lease (a worker
 * that lost it writes nothing more); content is encrypted with the workspace's data key.
 */
export function runEngine(deps: EngineDeps) {
  const { db, repo, clock, settings } = deps;
  /** Runs executing in this process, by id: what cancel requests and shutdown abort. */
  const live = new Map<string, AbortController>();
  const running = new Set<Promise<void>>();
  /**
   * Each claim holds the lease under its own name (this worker's, numbered): an execution of
   * this process whose lease ran out and was claimed again, here or elsewhere, is fenced off
   * like another worker's.
   */
  let claims = 0;
  /** Set by release(): a stopping worker claims nothing more. */
  let closed = false;
  const holderOf = (run: Pick<AgentRunRow, 'leaseOwner'>): string => {
    if (!run.leaseOwner) throw new LeaseLost();
    return run.leaseOwner;
  };

  // Pass `tx` inside a transaction: the vault then reads (or creates) the key in it.
  const enc = (run: Pick<AgentRunRow, 'workspaceId' | 'id'>, field: string, value: unknown, tx?: Database) =>
    deps.vault.encrypt(runField(run.workspaceId, run.id, field), JSON.stringify(value), tx);
  const dec = async <T>(
    run: Pick<AgentRunRow, 'workspaceId' | 'id'>,
    field: string,
    value: Buffer,
    tx?: Database,
  ): Promise<T> => JSON.parse(await deps.vault.decryptString(runField(run.workspaceId, run.id, field), value, tx)) as T;

  /** Appends events (encrypted) to the run and wakes its followers once committed. */
  async function appendEvents(
    tx: Database,
    run: Pick<AgentRunRow, 'workspaceId' | 'id' | 'createdAt'>,
    events: Array<{ type: string; data: Buffer }>,
  ) {
    await repo.appendEvents(tx, run, events as NewEvent[], clock.now());
  }

  async function event(run: Pick<AgentRunRow, 'workspaceId' | 'id'>, type: string, data: unknown, tx?: Database) {
    return { type, data: await enc(run, `event:${type}`, data, tx) };
  }

  return {
    live,
    event,
    enc,
    dec,

    /** Aborts a run executing here (cancel, shutdown); false when it is not. */
    abort(runId: string, reason: 'cancelled' | 'shutdown'): boolean {
      const c = live.get(runId);
      if (!c) return false;
      c.abort(reason);
      return true;
    },

    /**
     * Shutdown: runs executing here stop at once and give their lease back (a worker elsewhere,
     * or this one after a restart, resumes them from their last step).
     */
    async release(): Promise<void> {
      closed = true;
      for (const c of live.values()) c.abort('shutdown');
      await Promise.allSettled([...running]);
    },

    /** Executes the run if it can be claimed; returns once it finished, paused or was lost. */
    execute(workspaceId: string, runId: string): Promise<void> {
      const p = executeRun(workspaceId, runId);
      running.add(p);
      void p.then(
        () => running.delete(p),
        () => running.delete(p),
      );
      return p;
    },
  };

  async function executeRun(workspaceId: string, runId: string): Promise<void> {
    if (closed) return;
    const now = clock.now();
    claims += 1;
    const owner = `${deps.owner}.${claims}`;
    const claimed = await db.tenant(workspaceId, async (tx) => {
      const row = await repo.claim(tx, workspaceId, runId, owner, now, new Date(now.getTime() + settings.leaseMs));
      if (!row) return null;
      // A run that was resumed more often than allowed (its workers keep dying) expires.
      if (row.attempts > settings.maxAttempts) return row;
      const deadline = row.deadlineAt ?? new Date(now.getTime() + (await timeoutOf(tx, row)) * 1000);
      if (!row.deadlineAt) await repo.update(tx, workspaceId, runId, owner, now, { deadlineAt: deadline });
      await appendEvents(tx, row, [
        await event(row, 'run.in_progress', { status: 'in_progress', attempt: row.attempts }, tx),
      ]);
      return { ...row, deadlineAt: deadline };
    });
    if (!claimed) return;
    deps.notify(runId);
    const controller = new AbortController();
    live.set(runId, controller);
    // Cancelled while no worker held it (its worker had died): it stops before any model call.
    if (claimed.cancelRequestedAt) controller.abort('cancelled');
    const heartbeat = setInterval(() => void beat(claimed, controller), settings.heartbeatMs);
    heartbeat.unref?.();
    const left = (claimed.deadlineAt?.getTime() ?? 0) - clock.now().getTime();
    const timer = setTimeout(() => controller.abort('timeout'), Math.max(0, left));
    timer.unref?.();
    try {
      if (claimed.attempts > settings.maxAttempts) {
        throw new RunStop({
          status: 'expired',
          stopReason: null,
          error: {
            code: 'run_lost',
            message: `The run's worker stopped ${claimed.attempts} times; it was given up.`,
          },
        });
      }
      await loop(claimed, controller.signal);
    } catch (err) {
      if (err instanceof LeaseLost || controller.signal.reason === 'lease_lost') return;
      if (controller.signal.reason === 'shutdown') {
        // Given back, not lost: claimable at once, and its resumption is not counted as a takeover.
        const now = clock.now();
        await db
          .tenant(workspaceId, (tx) =>
            repo.update(tx, workspaceId, runId, owner, now, { leaseUntil: now, leaseOwner: null }),
          )
          .catch(() => undefined);
        return;
      }
      const ending = endingOf(err, controller.signal);
      await finish(claimed, ending).catch((e) => {
        if (!(e instanceof LeaseLost)) throw e;
      });
    } finally {
      clearInterval(heartbeat);
      clearTimeout(timer);
      // A later claim of the same run in this process may have taken the entry over.
      if (live.get(runId) === controller) live.delete(runId);
    }
  }

  async function timeoutOf(tx: Database, row: AgentRunRow): Promise<number> {
    const def = await deps.definitionOf(tx, row.workspaceId, row.agentId, row.agentVersion);
    return def?.limits.timeout_seconds ?? 300;
  }

  async function beat(run: AgentRunRow, controller: AbortController) {
    try {
      const now = clock.now();
      const r = await db.tenant(run.workspaceId, (tx) =>
        repo.heartbeat(tx, run.workspaceId, run.id, holderOf(run), now, new Date(now.getTime() + settings.leaseMs)),
      );
      if (!r.held) controller.abort('lease_lost');
      else if (r.cancelRequested) controller.abort('cancelled');
    } catch {
      // A missed heartbeat is retried at the next one; the lease outlasts a few.
    }
  }

  /** Maps what stopped the loop to the run's ending. */
  function endingOf(err: unknown, signal: AbortSignal): Ending {
    if (err instanceof RunStop) return err.ending;
    if (signal.aborted) {
      if (signal.reason === 'cancelled')
        return {
          status: 'cancelled',
          stopReason: 'cancelled',
          error: { code: 'cancelled', message: 'The run was cancelled.' },
        };
      if (signal.reason === 'timeout')
        return {
          status: 'incomplete',
          stopReason: 'timeout',
          error: { code: 'timeout', message: 'The run reached its time limit.' },
        };
      if (signal.reason === 'lease_lost') throw new LeaseLost();
      if (signal.reason === 'shutdown') throw new LeaseLost();
    }
    if (err instanceof AppError) {
      if (err.code === 'insufficient_credits')
        return {
          status: 'failed',
          stopReason: 'insufficient_credits',
          error: { code: err.code, message: err.message },
        };
      return { status: 'failed', stopReason: 'llm_error', error: { code: err.code, message: err.message } };
    }
    deps.logger.error({ err: (err as Error)?.name }, 'agents: a run failed unexpectedly');
    return {
      status: 'failed',
      stopReason: null,
      error: { code: 'internal_error', message: 'The run failed unexpectedly.' },
    };
  }

  /** Writes the run's end (status, stop reason, error, output) and its last event, under the lease. */
  async function finish(run: AgentRunRow, ending: Ending) {
    const now = clock.now();
    const patch: RunPatch = {
      status: ending.status,
      stopReason: ending.stopReason,
      lastErrorCode: ending.error?.code ?? null,
      lastErrorMessage: ending.error?.message ?? null,
      completedAt: now,
      leaseOwner: null,
      leaseUntil: null,
      pending: null,
      actionExpiresAt: null,
    };
    if (ending.output !== undefined) patch.output = await enc(run, 'output', ending.output);
    const ev = await event(run, `run.${ending.status}`, {
      status: ending.status,
      stopReason: ending.stopReason,
      error: ending.error ?? null,
      ...(ending.output !== undefined ? { output: ending.output } : {}),
    });
    await db.tenant(run.workspaceId, async (tx) => {
      if (!(await repo.update(tx, run.workspaceId, run.id, holderOf(run), now, patch))) throw new LeaseLost();
      await appendEvents(tx, run, [ev]);
    });
    deps.notify(run.id);
  }

  /** Writes under the lease: `fn` runs in the run's transaction once the lease is confirmed. */
  async function underLease<T>(run: AgentRunRow, patch: RunPatch, fn: (tx: Database) => Promise<T>): Promise<T> {
    const now = clock.now();
    const out = await db.tenant(run.workspaceId, async (tx) => {
      if (!(await repo.update(tx, run.workspaceId, run.id, holderOf(run), now, patch))) throw new LeaseLost();
      return fn(tx);
    });
    deps.notify(run.id);
    return out;
  }

  async function loop(run: AgentRunRow, signal: AbortSignal) {
    if (run.userId) {
      // Checked again whenever a worker takes the run up: a queued or paused run may wait long.
      try {
        deps.assertProcessingAllowed(run.userId);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        throw new RunStop({ status: 'failed', stopReason: null, error: { code: err.code, message: err.message } });
      }
      if (!(await deps.mayRun(run.workspaceId, run.userId))) {
        throw new RunStop({
          status: 'failed',
          stopReason: null,
          error: {
            code: 'member_cannot_run',
            message: 'The member who started the run is no longer allowed to run agents in this workspace.',
          },
        });
      }
    }
    const def = await db.tenant(run.workspaceId, (tx) =>
      deps.definitionOf(tx, run.workspaceId, run.agentId, run.agentVersion),
    );
    if (!def) {
      throw new RunStop({
        status: 'failed',
        stopReason: null,
        error: { code: 'agent_not_found', message: 'The agent version this run pinned no longer exists.' },
      });
    }
    let policy: Omit<RunCaller, 'workspaceId' | 'keyId' | 'userId' | 'requestId'> = {
      allowedModels: null,
      rateLimitRpm: null,
      rateLimitTpm: null,
    };
    if (run.keyId) {
      const p = await deps.keyPolicy(run.workspaceId, run.keyId);
      if (!p) {
        throw new RunStop({
          status: 'failed',
          stopReason: null,
          error: { code: 'key_revoked', message: 'The API key that started the run was revoked or expired.' },
        });
      }
      policy = p;
    }
    const caller: RunCaller = {
      workspaceId: run.workspaceId,
      keyId: run.keyId,
      userId: run.userId,
      requestId: run.id,
      ...policy,
    };
    let tools: Tool[];
    try {
      tools = await deps.resolveTools(run.workspaceId, def.tools);
    } catch (err) {
      const error =
        err instanceof AppError
          ? { code: err.code, message: err.message }
          : { code: 'tool_error', message: 'The agent tools could not be prepared.' };
      throw new RunStop({ status: 'failed', stopReason: 'tool_error', error });
    }
    const byName = new Map(tools.map((t) => [t.name, t]));
    const toolDefs = tools.map(toolSpec);

    const window = await deps.contextWindow(run.workspaceId, def.model);
    // Tool definitions are input too: each call sends them.
    const toolsEstimate = toolDefs.length > 0 ? Math.ceil(JSON.stringify(toolDefs).length / 4) : 0;

    // The conversation so far: the context the run started from, then every persisted step.
    const messages: ChatMessage[] = run.context ? await dec<ChatMessage[]>(run, 'context', run.context) : [];
    const steps = await db.tenant(run.workspaceId, (tx) => repo.steps(tx, run.workspaceId, run.id));
    let seq = steps.reduce((m, s) => Math.max(m, s.seq), 0);
    const state = {
      modelSteps: run.modelSteps,
      toolSteps: run.toolSteps,
      toolFailures: run.toolFailures,
      inputTokens: run.inputTokens,
      outputTokens: run.outputTokens,
      costMicros: run.costMicros,
    };
    let lastCalls: ToolCall[] = [];
    const done = new Set<string>();
    for (const s of steps) {
      if (s.kind === 'model' && s.status === 'completed' && s.content) {
        const m = await dec<ChatMessage>(run, `step:${s.seq}`, s.content);
        messages.push(m);
        lastCalls = m.tool_calls ?? [];
        done.clear();
      } else if (s.kind === 'tool' && s.toolCallId) {
        let result: string;
        if (s.status === 'running' || !s.content) {
          // The worker stopped while the tool ran: whether it took effect is unknown; the model is told so.
          result = JSON.stringify({
            error: {
              code: 'interrupted',
              message: 'The tool call was interrupted by a restart; it may or may not have taken effect.',
            },
          });
          const content = await enc(run, `step:${s.seq}`, { arguments: '', result } satisfies ToolStepContent);
          await underLease(run, {}, (tx) =>
            repo.updateStep(tx, run.workspaceId, run.id, s.seq, {
              status: 'interrupted',
              errorCode: 'interrupted',
              content,
              completedAt: clock.now(),
            }),
          );
        } else {
          result = (await dec<ToolStepContent>(run, `step:${s.seq}`, s.content)).result;
        }
        messages.push({ role: 'tool', tool_call_id: s.toolCallId, content: result });
        done.add(s.toolCallId);
      }
    }
    const pending: Pending | null = run.pending ? await dec<Pending>(run, 'pending', run.pending) : null;

    const counters = (): RunPatch => ({ ...state });

    /** Runs one tool call as a step: running first (a crash leaves it interrupted), then its result. */
    async function runTool(call: ToolCall, args: string, denied: string | null) {
      seq += 1;
      const stepSeq = seq;
      const started = clock.now();
      const t0 = performance.now();
      const name = call.function.name;
      await underLease(run, {}, (tx) =>
        repo.insertStep(tx, {
          runId: run.id,
          workspaceId: run.workspaceId,
          runCreatedAt: run.createdAt,
          seq: stepSeq,
          kind: 'tool',
          status: 'running',
          toolName: name.slice(0, 200),
          toolCallId: call.id.slice(0, 200),
          errorCode: null,
          content: null,
          inputTokens: 0,
          outputTokens: 0,
          costMicros: 0,
          latencyMs: null,
          startedAt: started,
          completedAt: null,
        } satisfies AgentRunStepRow),
      );
      let result: ToolResult;
      let status: AgentRunStepRow['status'];
      if (denied !== null) {
        result = { ok: false, error: { code: 'denied', message: denied } };
        status = 'denied';
      } else {
        const tool = byName.get(name);
        if (!tool) {
          result = {
            ok: false,
            error: { code: 'unknown_tool', message: `There is no tool named ${name.slice(0, 100)}.` },
          };
        } else {
          let parsed: unknown;
          try {
            parsed = args.trim() === '' ? {} : JSON.parse(args);
          } catch {
            parsed = undefined;
          }
          result =
            parsed === undefined
              ? { ok: false, error: { code: 'invalid_arguments', message: 'The arguments are not valid JSON.' } }
              : await tool.execute(parsed, {
                  workspaceId: run.workspaceId,
                  userId: run.userId ?? '',
                  runId: run.id,
                  signal,
                });
        }
        status = result.ok ? 'completed' : 'failed';
      }
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
      const content = toolContent(result);
      state.toolSteps += 1;
      if (status === 'failed') state.toolFailures += 1;
      const stored = await enc(run, `step:${stepSeq}`, { arguments: args, result: content } satisfies ToolStepContent);
      const ev = await event(run, 'run.step', {
        seq: stepSeq,
        kind: 'tool',
        status,
        tool: name,
        toolCallId: call.id,
        arguments: args,
        result: content,
        ...(result.ok ? {} : { error: result.error }),
      });
      await underLease(run, counters(), async (tx) => {
        await repo.updateStep(tx, run.workspaceId, run.id, stepSeq, {
          status,
          errorCode: result.ok ? null : result.error.code,
          content: stored,
          latencyMs: Math.round(performance.now() - t0),
          completedAt: clock.now(),
        });
        await appendEvents(tx, run, [ev]);
      });
      messages.push({ role: 'tool', tool_call_id: call.id, content });
      done.add(call.id);
      if (state.toolFailures >= settings.maxToolFailures) {
        throw new RunStop({
          status: 'failed',
          stopReason: 'tool_error',
          error: { code: 'tool_error', message: `${state.toolFailures} tool calls failed; the run stopped.` },
        });
      }
    }

    /** Handles the last model call's tool calls not yet answered; pauses for approvals. */
    async function answerCalls() {
      const open = lastCalls.filter((c) => !done.has(c.id));
      if (open.length === 0) return;
      const needs = (c: ToolCall) => {
        if (def?.tool_approval === 'always') return true;
        if (def?.tool_approval === 'never') return false;
        return byName.get(c.function.name)?.requiresApproval === true;
      };
      const decisions = pending?.decisions ?? {};
      const waiting = open.filter((c) => needs(c) && !decisions[c.id]);
      // Calls that need no decision run first; the others wait for theirs.
      for (const c of open) {
        if (waiting.includes(c)) continue;
        const d = decisions[c.id];
        if (d && !d.approved)
          await runTool(c, c.function.arguments, d.reason ? `Denied: ${d.reason}` : 'A person denied this tool call.');
        else await runTool(c, d?.arguments ?? c.function.arguments, null);
      }
      if (waiting.length > 0) {
        const expires = new Date(clock.now().getTime() + settings.approvalTtlMs);
        const next: Pending = {
          calls: waiting.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
          decisions: {},
        };
        const ev = await event(run, 'run.requires_action', {
          status: 'requires_action',
          toolCalls: next.calls,
          expiresAt: expires.toISOString(),
        });
        await underLease(
          run,
          {
            ...counters(),
            status: 'requires_action',
            pending: await enc(run, 'pending', next),
            actionExpiresAt: expires,
            leaseOwner: null,
            leaseUntil: null,
          },
          (tx) => appendEvents(tx, run, [ev]),
        );
        throw new Paused();
      }
    }

    try {
      await answerCalls();
      for (;;) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
        if (state.modelSteps >= def.limits.max_steps) {
          throw new RunStop({
            status: 'incomplete',
            stopReason: 'max_steps',
            error: { code: 'max_steps', message: `The run made its ${def.limits.max_steps} model calls.` },
          });
        }
        const used = state.inputTokens + state.outputTokens;
        const left = def.limits.max_tokens - used;
        const estimate = estimateMessages(messages) + toolsEstimate;
        if (left <= estimate) {
          throw new RunStop({
            status: 'incomplete',
            stopReason: 'max_tokens',
            error: {
              code: 'max_tokens',
              message: `The run's budget of ${def.limits.max_tokens} tokens has no room for another model call.`,
            },
          });
        }
        // A call may never ask for more output than the budget has left.
        // Without the agent's own cap, the gateway's default: each call reserves credits for its worst case.
        // Nor more than the model's window holds beside the prompt (providers refuse that).
        const roomInWindow = window === null ? Number.MAX_SAFE_INTEGER : window - estimate;
        if (roomInWindow <= 0) {
          throw new RunStop({
            status: 'incomplete',
            stopReason: 'max_tokens',
            error: {
              code: 'context_window_exceeded',
              message: `The conversation no longer fits the model's context window of ${window} tokens.`,
            },
          });
        }
        const maxOut = Math.min(
          def.params.max_output_tokens ?? settings.defaultMaxOutputTokens,
          left - estimate,
          roomInWindow,
        );
        const body: ChatCompletionRequest = {
          model: def.model,
          messages,
          max_tokens: maxOut,
          ...(toolDefs.length > 0 ? { tools: toolDefs } : {}),
          ...paramsOf(def),
        };
        seq += 1;
        const stepSeq = seq;
        const started = clock.now();
        const t0 = performance.now();
        const { response, usage } = await deps.complete(caller, body, signal);
        const choice = response.choices[0];
        const message: ChatMessage = {
          role: 'assistant',
          content: typeof choice?.message.content === 'string' ? choice.message.content : null,
          ...(choice?.message.tool_calls?.length ? { tool_calls: choice.message.tool_calls } : {}),
        };
        state.modelSteps += 1;
        state.inputTokens += usage.inputTokens;
        state.outputTokens += usage.outputTokens;
        state.costMicros += usage.costMicros;
        const stored = await enc(run, `step:${stepSeq}`, message);
        const ev = await event(run, 'run.step', {
          seq: stepSeq,
          kind: 'model',
          status: 'completed',
          message,
          finishReason: choice?.finish_reason ?? null,
          usage: { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, costMicros: usage.costMicros },
        });
        await underLease(run, counters(), async (tx) => {
          await repo.insertStep(tx, {
            runId: run.id,
            workspaceId: run.workspaceId,
            runCreatedAt: run.createdAt,
            seq: stepSeq,
            kind: 'model',
            status: 'completed',
            toolName: null,
            toolCallId: null,
            errorCode: null,
            content: stored,
            inputTokens: usage.inputTokens,
            outputTokens: usage.outputTokens,
            costMicros: usage.costMicros,
            latencyMs: Math.round(performance.now() - t0),
            startedAt: started,
            completedAt: clock.now(),
          });
          await appendEvents(tx, run, [ev]);
        });
        messages.push(message);
        lastCalls = message.tool_calls ?? [];
        done.clear();
        if (pending) pending.decisions = {};
        if (lastCalls.length === 0) {
          const output = typeof message.content === 'string' ? message.content : '';
          // Cut off at the output cap: what the budget (or the agent's max_output_tokens) allowed is not the whole answer.
          if (choice?.finish_reason === 'length') {
            throw new RunStop({
              status: 'incomplete',
              stopReason: 'max_tokens',
              error: { code: 'max_tokens', message: `The run used its budget of ${def.limits.max_tokens} tokens.` },
              output,
            });
          }
          throw new RunStop({ status: 'completed', stopReason: 'end_turn', output });
        }
        await answerCalls();
      }
    } catch (err) {
      if (err instanceof Paused) return;
      throw err;
    }
  }
}

/** The run paused for approval (its state is written). */
class Paused extends Error {}

function paramsOf(def: AgentDefinition): Partial<ChatCompletionRequest> {
  const p = def.params;
  return {
    ...(p.temperature !== undefined ? { temperature: p.temperature } : {}),
    ...(p.top_p !== undefined ? { top_p: p.top_p } : {}),
    ...(p.presence_penalty !== undefined ? { presence_penalty: p.presence_penalty } : {}),
    ...(p.frequency_penalty !== undefined ? { frequency_penalty: p.frequency_penalty } : {}),
    ...(p.stop !== undefined ? { stop: p.stop } : {}),
    ...(p.seed !== undefined ? { seed: p.seed } : {}),
    ...(p.reasoning_effort !== undefined ? { reasoning_effort: p.reasoning_effort } : {}),
  };
}

export type RunEngine = ReturnType<typeof runEngine>;
