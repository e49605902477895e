import type { Bus } from '../../platform/bus/index.ts';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditService } from '../audit/index.ts';
import type { ChatMessage } from '../gateway/index.ts';
import type { agentsRepo } from './agents.repo.ts';
import { estimateMessages, type Pending, type RunEngine } from './agents.runs.engine.ts';
import type { runsRepo } from './agents.runs.repo.ts';
import type { CreateRunInput, DecisionInput, RunView, StepView } from './agents.runs.schemas.ts';
import { type AgentRunRow, FINISHED, type RunStatus } from './agents.runs.tables.ts';
import type { AgentDefinition } from './agents.schemas.ts';

export const RUN_JOB = 'agents.run';
export const RUNS_CHANNEL = 'berth.agent_runs';

type InputMessage = { role: 'user' | 'assistant'; content: string };

export type RunsServiceDeps = {
  db: Db;
  repo: typeof runsRepo;
  agents: typeof agentsRepo;
  engine: RunEngine;
  clock: Clock;
  logger: Logger;
  jobs: Pick<Jobs, 'send'>;
  bus: Pick<Bus, 'publish' | 'subscribe'>;
  /** The context window of a model the workspace calls (null: unknown). */
  contextWindow(workspaceId: string, model: string): Promise<number | null>;
  /** Billing: refuses `insufficient_credits` when the workspace cannot start work. */
  canStartWork(workspaceId: string): Promise<unknown>;
  /** Privacy: refuses `processing_restricted` for a user who restricted processing. */
  assertProcessingAllowed(userId: string): void;
  /** The audit log: cancels and decisions on tool calls are recorded (never arguments). */
  audit: Pick<AuditService, 'record'>;
  /**
   * The tokens the agent's tool definitions take in each model call (built-in and HTTP tools
   * exactly as sent; an MCP server's tools are known only when the run starts).
   */
  toolsEstimate?(workspaceId: string, definition: AgentDefinition): Promise<number>;
  /** Tools: refuses 409 `connection_required` when the user lacks a connection the definition lists. */
  checkConnections?(workspaceId: string, userId: string | null, definition: AgentDefinition): Promise<void>;
  settings: { approvalTtlMs: number; defaultMaxOutputTokens: number };
};

/** The window a model is assumed to have when the catalog does not say. */
const DEFAULT_WINDOW = 128_000;

const runFinished = (status: RunStatus) =>
  new AppError('run_finished', `The run already ended (${status}); it cannot change any more.`);

/**
 * A conversation where every assistant tool call has its result: a call a run never ran (it
 * ended first: a limit, a cancel, a tool-error stop) is answered as not run, since providers
 * refuse a conversation with a call left unanswered.
 */
export function answerEveryCall(messages: ChatMessage[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as ChatMessage;
    out.push(m);
    if (m.role !== 'assistant' || !m.tool_calls?.length) continue;
    const answered = new Set<string>();
    while (messages[i + 1]?.role === 'tool') {
      const t = messages[++i] as ChatMessage;
      if (t.tool_call_id) answered.add(t.tool_call_id);
      out.push(t);
    }
    for (const c of m.tool_calls) {
      if (answered.has(c.id)) continue;
      out.push({
        role: 'tool',
        tool_call_id: c.id,
        content: JSON.stringify({ error: { code: 'not_run', message: 'The run ended before this call ran.' } }),
      });
    }
  }
  return out;
}

/**
 * Agent runs: create (sync, streamed or in the background), read, list, follow their
 * events, cancel, and decide on tool calls waiting for approval. The engine executes them.
 */
export function runsService(deps: RunsServiceDeps) {
  const { db, repo, clock, engine } = deps;
  /** Followers of runs' events in this process, by run id. */
  const followers = new Map<string, Set<() => void>>();
  /** Set on shutdown: event streams end, their clients resume from their last event id elsewhere. */
  let closing = false;

  function wake(runId: string) {
    for (const f of followers.get(runId) ?? []) f();
  }

  function userOf(scope: Scope): string | null {
    return scope.actor.type === 'system' ? null : scope.actor.userId;
  }

  async function mustFind(tx: Database, workspaceId: string, runId: string, lock = false) {
    const row = await repo.findRun(tx, workspaceId, runId, { lock });
    if (!row) throw notFound('run');
    return row;
  }

  async function view(row: AgentRunRow): Promise<RunView> {
    const input = await engine.dec<string | InputMessage[]>(row, 'input', row.input);
    const output = row.output ? await engine.dec<string>(row, 'output', row.output) : null;
    const pending =
      row.pending && row.status === 'requires_action' ? await engine.dec<Pending>(row, 'pending', row.pending) : null;
    return {
      id: row.id,
      object: 'agent.run',
      workspaceId: row.workspaceId,
      agentId: row.agentId,
      agentVersion: row.agentVersion,
      status: row.status,
      stopReason: row.stopReason,
      lastError: row.lastErrorCode ? { code: row.lastErrorCode, message: row.lastErrorMessage ?? '' } : null,
      input,
      output,
      requiredAction: pending
        ? {
            type: 'approve_tool_calls',
            toolCalls: pending.calls.filter((c) => !pending.decisions[c.id]),
            expiresAt: (row.actionExpiresAt ?? clock.now()).toISOString(),
          }
        : null,
      usage: {
        inputTokens: row.inputTokens,
        outputTokens: row.outputTokens,
        totalTokens: row.inputTokens + row.outputTokens,
        modelSteps: row.modelSteps,
        toolSteps: row.toolSteps,
      },
      costMicros: row.costMicros,
      previousRunId: row.previousRunId,
      userId: row.userId,
      keyId: row.keyId,
      createdAt: row.createdAt.toISOString(),
      startedAt: row.startedAt?.toISOString() ?? null,
      completedAt: row.completedAt?.toISOString() ?? null,
    };
  }

  /** The conversation a finished run ended with (its context and every step), without its system message. */
  async function conversationOf(tx: Database, prev: AgentRunRow): Promise<ChatMessage[]> {
    const out: ChatMessage[] = prev.context
      ? (await engine.dec<ChatMessage[]>(prev, 'context', prev.context, tx)).filter((m) => m.role !== 'system')
      : [];
    for (const s of await repo.steps(tx, prev.workspaceId, prev.id)) {
      if (!s.content) continue;
      if (s.kind === 'model' && s.status === 'completed')
        out.push(await engine.dec<ChatMessage>(prev, `step:${s.seq}`, s.content, tx));
      if (s.kind === 'tool' && s.toolCallId) {
        const c = await engine.dec<{ result: string }>(prev, `step:${s.seq}`, s.content, tx);
        out.push({ role: 'tool', tool_call_id: s.toolCallId, content: c.result });
      }
    }
    return answerEveryCall(out);
  }

  /**
   * The messages a run starts from: the system instructions, the previous run's conversation
   * (oldest turns dropped first while it does not fit the model's window with room for the
   * answer), then the input. The instructions and the input are never dropped.
   */
  function fitContext(
    system: ChatMessage[],
    history: ChatMessage[],
    input: ChatMessage[],
    window: number,
    reserve: number,
    toolsEstimate: number,
  ): { messages: ChatMessage[]; dropped: number } {
    const budget = window - reserve - toolsEstimate;
    // Turns start at user messages: a turn's assistant and tool messages go with it.
    const turns: ChatMessage[][] = [];
    for (const m of history) {
      if (m.role === 'user' || turns.length === 0) turns.push([m]);
      else turns[turns.length - 1]?.push(m);
    }
    let dropped = 0;
    const fixed = estimateMessages([...system, ...input]);
    while (turns.length > 0 && fixed + estimateMessages(turns.flat()) > budget) {
      turns.shift();
      dropped += 1;
    }
    return { messages: [...system, ...turns.flat(), ...input], dropped };
  }

  async function start(row: AgentRunRow) {
    await deps.jobs.send(RUN_JOB, { workspaceId: row.workspaceId, runId: row.id }, { singletonKey: row.id });
  }

  return {
    /**
     * Creates a run of an agent's published version and, unless `background`, executes it in
     * this process (a sync call answers once it ended or waits for approval; a streamed one
     * follows its events). A background run is queued for a worker.
     */
    async createRun({ scope, input }: { scope: Scope; input: CreateRunInput }) {
      const userId = userOf(scope);
      if (userId) deps.assertProcessingAllowed(userId);
      await deps.canStartWork(scope.workspaceId);
      const now = clock.now();
      const id = newId('run', now);
      const { agent, version, def } = await db.tenant(scope.workspaceId, async (tx) => {
        const a = await deps.agents.findAgent(tx, scope.workspaceId, input.agent);
        if (!a) throw notFound('agent');
        if (a.archivedAt) throw new AppError('agent_archived', `The agent ${a.name} was archived: it cannot run.`);
        const n = input.version ?? a.latestVersion;
        if (n < 1)
          throw new AppError('agent_not_published', `The agent ${a.name} has no published version: publish it first.`);
        const v = await deps.agents.findVersion(tx, scope.workspaceId, a.id, n);
        if (!v) throw notFound('version of this agent');
        return { agent: a, version: n, def: v.definition as AgentDefinition };
      });
      // Every connection the agent acts through must be usable by this user before anything runs.
      await deps.checkConnections?.(scope.workspaceId, userId, def);
      let history: ChatMessage[] = [];
      if (input.previous_run_id) {
        history = await db.tenant(scope.workspaceId, async (tx) => {
          const prev = await repo.findRun(tx, scope.workspaceId, input.previous_run_id as string);
          if (!prev) throw notFound('previous run');
          if (!FINISHED.has(prev.status)) {
            throw new AppError('previous_run_active', 'The previous run has not ended yet: continue it once it has.');
          }
          return conversationOf(tx, prev);
        });
      }
      const inputMessages: ChatMessage[] =
        typeof input.input === 'string' ? [{ role: 'user', content: input.input }] : input.input.map((m) => ({ ...m }));
      const system: ChatMessage[] = def.instructions ? [{ role: 'system', content: def.instructions }] : [];
      const window = (await deps.contextWindow(scope.workspaceId, def.model)) ?? DEFAULT_WINDOW;
      const reserve = Math.min(
        def.params.max_output_tokens ?? deps.settings.defaultMaxOutputTokens,
        Math.floor(window / 4),
      );
      // The tool definitions go with every call.
      const toolsEstimate = deps.toolsEstimate
        ? await deps.toolsEstimate(scope.workspaceId, def)
        : Math.ceil(JSON.stringify(def.tools).length / 4);
      const { messages, dropped } = fitContext(system, history, inputMessages, window, reserve, toolsEstimate);
      const run: AgentRunRow = {
        id,
        workspaceId: scope.workspaceId,
        agentId: agent.id,
        agentVersion: version,
        userId,
        keyId: scope.actor.type === 'api_key' ? scope.actor.keyId : null,
        previousRunId: input.previous_run_id ?? null,
        status: 'queued',
        stopReason: null,
        lastErrorCode: null,
        lastErrorMessage: null,
        input: Buffer.alloc(0),
        context: null,
        output: null,
        pending: null,
        modelSteps: 0,
        toolSteps: 0,
        toolFailures: 0,
        inputTokens: 0,
        outputTokens: 0,
        costMicros: 0,
        eventSeq: 0,
        leaseOwner: null,
        leaseUntil: null,
        attempts: 0,
        cancelRequestedAt: null,
        actionExpiresAt: null,
        deadlineAt: null,
        createdAt: now,
        startedAt: null,
        completedAt: null,
        updatedAt: now,
      };
      run.input = await engine.enc(run, 'input', input.input);
      run.context = await engine.enc(run, 'context', messages);
      const created = await engine.event(run, 'run.created', {
        runId: id,
        status: 'queued',
        agentId: agent.id,
        agentVersion: version,
        contextTurnsDropped: dropped,
      });
      await db.tenant(scope.workspaceId, async (tx) => {
        await repo.insertRun(tx, run);
        await repo.appendEvents(tx, run, [created], now);
        if (input.background) afterCommit(tx, () => start(run));
      });
      if (input.background || input.stream) {
        if (input.stream) {
          // Executed here; the stream follows its events. A failure to execute is the run's, not the request's.
          void engine.execute(run.workspaceId, run.id).catch((err) => {
            deps.logger.error({ err: (err as Error)?.name, runId: run.id }, 'agents: a streamed run could not execute');
          });
        }
        return { run: await view(run), executing: !input.background };
      }
      await engine.execute(run.workspaceId, run.id);
      const after = await db.tenant(scope.workspaceId, (tx) => mustFind(tx, scope.workspaceId, run.id));
      return { run: await view(after), executing: false };
    },

    /**
     * Executes a queued run (or one no worker holds) in this process if it can be claimed,
     * as the `agents.run` job does; returns once it ended, paused or was lost.
     */
    execute(workspaceId: string, runId: string): Promise<void> {
      return engine.execute(workspaceId, runId);
    },

    async getRun({ scope, runId }: { scope: Scope; runId: string }): Promise<RunView> {
      return view(await db.tenant(scope.workspaceId, (tx) => mustFind(tx, scope.workspaceId, runId)));
    },

    async listRuns({
      scope,
      agent,
      status,
      cursor,
      limit,
    }: {
      scope: Scope;
      agent?: string;
      status?: RunStatus;
      cursor?: string;
      limit: number;
    }) {
      const rows = await db.tenant(scope.workspaceId, async (tx) => {
        let agentId: string | undefined;
        if (agent) {
          const a = await deps.agents.findAgent(tx, scope.workspaceId, agent);
          if (!a) throw notFound('agent');
          agentId = a.id;
        }
        let before: { createdAt: Date; id: string } | undefined;
        if (cursor) {
          const c = await repo.findRun(tx, scope.workspaceId, cursor);
          if (!c) throw new AppError('invalid_cursor', 'The cursor names no run of this workspace.');
          before = { createdAt: c.createdAt, id: c.id };
        }
        return repo.listRuns(tx, scope.workspaceId, {
          limit: limit + 1,
          ...(agentId ? { agentId } : {}),
          ...(status ? { status } : {}),
          ...(before ? { before } : {}),
        });
      });
      const page = rows.slice(0, limit);
      return {
        data: await Promise.all(page.map(view)),
        nextCursor: rows.length > limit ? (page[page.length - 1]?.id ?? null) : null,
      };
    },

    async listSteps({ scope, runId }: { scope: Scope; runId: string }): Promise<StepView[]> {
      const { run, steps } = await db.tenant(scope.workspaceId, async (tx) => {
        const r = await mustFind(tx, scope.workspaceId, runId);
        return { run: r, steps: await repo.steps(tx, scope.workspaceId, runId) };
      });
      return Promise.all(
        steps.map(async (s) => ({
          seq: s.seq,
          kind: s.kind,
          status: s.status,
          toolName: s.toolName,
          toolCallId: s.toolCallId,
          errorCode: s.errorCode,
          content: s.content ? await engine.dec<unknown>(run, `step:${s.seq}`, s.content) : null,
          inputTokens: s.inputTokens,
          outputTokens: s.outputTokens,
          costMicros: s.costMicros,
          latencyMs: s.latencyMs,
          startedAt: s.startedAt.toISOString(),
          completedAt: s.completedAt?.toISOString() ?? null,
        })),
      );
    },

    /**
     * Calls `emit` with each event of the run after `after`, in order, following the run
     * live until it ends (or `signal` aborts). Events are replayed from the database, so a
     * client that reconnects with the last id it saw misses nothing.
     */
    async follow(
      { scope, runId, after }: { scope: Scope; runId: string; after: number },
      emit: (e: { seq: number; type: string; data: unknown }) => Promise<void> | void,
      signal: AbortSignal,
    ): Promise<void> {
      await db.tenant(scope.workspaceId, (tx) => mustFind(tx, scope.workspaceId, runId));
      let last = after;
      let woke: () => void = () => undefined;
      // A wake-up that came while the events were being read is not lost: the next wait is skipped.
      let dirty = false;
      const waker = () => {
        dirty = true;
        woke();
      };
      const set = followers.get(runId) ?? new Set<() => void>();
      followers.set(runId, set);
      set.add(waker);
      signal.addEventListener('abort', waker, { once: true });
      try {
        while (!signal.aborted && !closing) {
          dirty = false;
          const { run, events } = await db.tenant(scope.workspaceId, async (tx) => ({
            run: await mustFind(tx, scope.workspaceId, runId),
            events: await repo.events(tx, scope.workspaceId, runId, last, 500),
          }));
          for (const e of events) {
            await emit({ seq: e.seq, type: e.type, data: await engine.dec<unknown>(run, `event:${e.type}`, e.data) });
            last = e.seq;
          }
          if (events.length === 500) continue;
          // Ended (or paused for a person) and every event sent: the stream is complete.
          if ((FINISHED.has(run.status) || run.status === 'requires_action') && last >= run.eventSeq) return;
          if (dirty) continue;
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, 1000);
            woke = () => {
              clearTimeout(t);
              resolve();
            };
          });
        }
      } finally {
        set.delete(waker);
        signal.removeEventListener('abort', waker);
        if (set.size === 0) followers.delete(runId);
      }
    },

    /** Cancels a run that has not ended; a run executing somewhere stops at its next step. */
    async cancelRun({ scope, runId }: { scope: Scope; runId: string }): Promise<RunView> {
      const now = clock.now();
      const held = await db.tenant(scope.workspaceId, async (tx) => {
        const r = await mustFind(tx, scope.workspaceId, runId, true);
        if (FINISHED.has(r.status)) throw runFinished(r.status);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'agent_run.cancelled',
          target: { type: 'agent_run', id: runId },
          diff: { agentId: r.agentId, status: r.status },
        });
        // A run no worker holds (its worker died or shut down) is cancelled here, like a queued one.
        if (r.status === 'in_progress' && r.leaseOwner !== null && r.leaseUntil !== null && r.leaseUntil >= now) {
          await repo.update(tx, scope.workspaceId, runId, null, now, { cancelRequestedAt: now });
          afterCommit(tx, () => deps.bus.publish(RUNS_CHANNEL, `cancel:${runId}`));
          return true;
        }
        const ev = await engine.event(
          r,
          'run.cancelled',
          {
            status: 'cancelled',
            stopReason: 'cancelled',
            error: { code: 'cancelled', message: 'The run was cancelled.' },
          },
          tx,
        );
        await repo.update(tx, scope.workspaceId, runId, null, now, {
          status: 'cancelled',
          stopReason: 'cancelled',
          lastErrorCode: 'cancelled',
          lastErrorMessage: 'The run was cancelled.',
          cancelRequestedAt: now,
          completedAt: now,
          pending: null,
          actionExpiresAt: null,
          leaseOwner: null,
          leaseUntil: null,
        });
        await repo.appendEvents(tx, r, [ev], now);
        afterCommit(tx, () => deps.bus.publish(RUNS_CHANNEL, runId));
        return false;
      });
      if (held) {
        // The worker stops at its next step (at once when it runs here): wait a moment for it.
        engine.abort(runId, 'cancelled');
        const until = Date.now() + 10_000;
        for (;;) {
          const r = await db.tenant(scope.workspaceId, (tx) => mustFind(tx, scope.workspaceId, runId));
          if (FINISHED.has(r.status) || Date.now() > until) return view(r);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      return view(await db.tenant(scope.workspaceId, (tx) => mustFind(tx, scope.workspaceId, runId)));
    },

    /**
     * Approves or denies tool calls the run waits for (one, or all). Once every call has its
     * decision the run resumes (queued for a worker); the time it waited does not count
     * against its time limit.
     */
    async decide({
      scope,
      runId,
      approve,
      input,
    }: {
      scope: Scope;
      runId: string;
      approve: boolean;
      input: DecisionInput;
    }): Promise<RunView> {
      if (approve && input.reason !== undefined) throw new AppError('bad_request', 'A reason goes with a denial.');
      if (!approve && input.arguments !== undefined) {
        throw new AppError('bad_request', 'Edited arguments go with an approval.');
      }
      if (input.arguments !== undefined) {
        if (!input.tool_call_id)
          throw new AppError('bad_request', 'Edited arguments name the tool_call_id they are for.');
        let parsed: unknown;
        try {
          parsed = JSON.parse(input.arguments);
        } catch {
          parsed = null;
        }
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw new AppError('invalid_arguments', 'The arguments must be a JSON object, as text.');
        }
      }
      const now = clock.now();
      let expired = false;
      const row = await db.tenant(scope.workspaceId, async (tx) => {
        const r = await mustFind(tx, scope.workspaceId, runId, true);
        if (r.status !== 'requires_action' || !r.pending) {
          if (FINISHED.has(r.status)) throw runFinished(r.status);
          throw new AppError('run_not_waiting', 'The run is not waiting for an approval.');
        }
        if (r.actionExpiresAt && r.actionExpiresAt <= now) {
          await expire(tx, r, now);
          expired = true;
          return r;
        }
        const pending = await engine.dec<Pending>(r, 'pending', r.pending, tx);
        const open = pending.calls.filter((c) => !pending.decisions[c.id]);
        const targets = input.tool_call_id ? open.filter((c) => c.id === input.tool_call_id) : open;
        if (targets.length === 0) throw notFound('tool call waiting for a decision');
        for (const c of targets) {
          pending.decisions[c.id] = approve
            ? { approved: true, ...(input.arguments !== undefined ? { arguments: input.arguments } : {}) }
            : { approved: false, ...(input.reason !== undefined ? { reason: input.reason } : {}) };
        }
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: approve ? 'agent_run.tool_approved' : 'agent_run.tool_denied',
          target: { type: 'agent_run', id: runId },
          // Which calls of which tools: never their arguments (customer content).
          diff: {
            toolCalls: targets.map((c) => ({ id: c.id, tool: c.name })),
            ...(approve ? { argumentsEdited: input.arguments !== undefined } : {}),
          },
        });
        const complete = pending.calls.every((c) => pending.decisions[c.id]);
        const events = [
          await engine.event(r, approve ? 'run.approved' : 'run.denied', { toolCallIds: targets.map((c) => c.id) }, tx),
        ];
        const patch: Parameters<typeof repo.update>[5] = { pending: await engine.enc(r, 'pending', pending, tx) };
        if (complete) {
          // The wait does not count against the time limit.
          const pausedAt = (r.actionExpiresAt?.getTime() ?? now.getTime()) - deps.settings.approvalTtlMs;
          const waited = Math.max(0, now.getTime() - pausedAt);
          Object.assign(patch, {
            status: 'queued',
            actionExpiresAt: null,
            ...(r.deadlineAt ? { deadlineAt: new Date(r.deadlineAt.getTime() + waited) } : {}),
          });
          events.push(await engine.event(r, 'run.queued', { status: 'queued' }, tx));
          afterCommit(tx, () => start(r));
        }
        await repo.update(tx, scope.workspaceId, runId, null, now, patch);
        await repo.appendEvents(tx, r, events, now);
        afterCommit(tx, () => deps.bus.publish(RUNS_CHANNEL, runId));
        return r;
      });
      if (expired)
        throw new AppError('approval_expired', 'The approval window of this run has passed; the run expired.');
      return view(await db.tenant(scope.workspaceId, (tx) => mustFind(tx, row.workspaceId, runId)));
    },

    /** An agent's runs held (90 days) since a time (default 30 days ago): count, tokens, cost. */
    async agentUsage({ scope, agent, since: from }: { scope: Scope; agent: string; since?: Date }) {
      const since = from ?? new Date(clock.now().getTime() - 30 * 86_400_000);
      return db.tenant(scope.workspaceId, async (tx) => {
        const a = await deps.agents.findAgent(tx, scope.workspaceId, agent);
        if (!a) throw notFound('agent');
        const [t] = await repo.agentTotals(tx, scope.workspaceId, [a.id], since);
        return {
          agentId: a.id,
          since: since.toISOString(),
          runs: t?.runs ?? 0,
          inputTokens: t?.inputTokens ?? 0,
          outputTokens: t?.outputTokens ?? 0,
          costMicros: t?.costMicros ?? 0,
        };
      });
    },

    /**
     * Finds runs whose worker died (lease ran out) and queues them again, and expires runs
     * whose approval window passed. Every worker runs it on a short interval.
     */
    async sweep(): Promise<{ resumed: number; expired: number }> {
      const now = clock.now();
      const stale = await db.system((tx) => repo.stale(tx, now, 100));
      let resumed = 0;
      let expiredCount = 0;
      for (const s of stale) {
        if (s.status === 'in_progress') {
          await deps.jobs.send(RUN_JOB, { workspaceId: s.workspaceId, runId: s.id }, { singletonKey: s.id });
          resumed += 1;
        } else {
          const done = await db.tenant(s.workspaceId, async (tx) => {
            const r = await repo.findRun(tx, s.workspaceId, s.id, { lock: true });
            if (r?.status !== 'requires_action' || !r.actionExpiresAt || r.actionExpiresAt > now) return false;
            await expire(tx, r, now);
            return true;
          });
          if (done) expiredCount += 1;
        }
      }
      return { resumed, expired: expiredCount };
    },

    /** Runs the bus subscription that carries cancel requests and event wake-ups across processes. */
    async followBus(): Promise<() => Promise<void>> {
      return deps.bus.subscribe(RUNS_CHANNEL, (message) => {
        if (message.startsWith('cancel:')) {
          const id = message.slice('cancel:'.length);
          engine.abort(id, 'cancelled');
          wake(id);
        } else wake(message);
      });
    },

    /**
     * Shutdown, before the server waits for its requests: event streams end, and runs executing
     * here (sync and streamed ones too) stop and give their lease back, for another worker to resume.
     */
    async release(): Promise<void> {
      closing = true;
      for (const set of followers.values()) for (const f of set) f();
      await engine.release();
    },

    /** Tells this process's followers of a run (and, through the bus, every other's) that it changed. */
    notify(runId: string) {
      wake(runId);
      void deps.bus.publish(RUNS_CHANNEL, runId).catch(() => undefined);
    },
  };

  async function expire(tx: Database, r: AgentRunRow, now: Date) {
    const ev = await engine.event(
      r,
      'run.expired',
      {
        status: 'expired',
        stopReason: null,
        error: { code: 'approval_expired', message: 'No decision came before the approval window closed.' },
      },
      tx,
    );
    await repo.update(tx, r.workspaceId, r.id, null, now, {
      status: 'expired',
      lastErrorCode: 'approval_expired',
      lastErrorMessage: 'No decision came before the approval window closed.',
      completedAt: now,
      pending: null,
      actionExpiresAt: null,
    });
    await repo.appendEvents(tx, r, [ev], now);
    afterCommit(tx, () => deps.bus.publish(RUNS_CHANNEL, r.id));
  }
}

export type RunsService = ReturnType<typeof runsService>;
