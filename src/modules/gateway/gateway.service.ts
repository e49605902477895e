import type { Clock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import {
  type CallOptions,
  type ChatCompletionRequest,
  type ChatCompletionResponse,
  type EmbeddingsRequest,
  type EmbeddingsResponse,
  UpstreamError,
  type Usage,
} from './gateway.adapter.ts';
import { costMicros, type ModelPrice } from './gateway.catalog.ts';
import type { CreditGate, Reservation } from './gateway.credits.ts';
import type { RateLimiter } from './gateway.limits.ts';
import { estimateFromChars, estimateTokens, inputEstimateOf, outputChars } from './gateway.measure.ts';

export { estimateFromChars, estimateTokens } from './gateway.measure.ts';

import { type LiveProvider, type ProvidersService, priceOf, type WorkspaceGateway } from './gateway.providers.ts';
import type { UsageEventRow } from './gateway.tables.ts';
import type { UsageRecorder } from './gateway.usage.ts';

/** Who is calling, from the verified API key. */
export type Caller = {
  workspaceId: string;
  keyId: string | null;
  userId: string | null;
  allowedModels: readonly string[] | null;
  rateLimitRpm: number | null;
  rateLimitTpm: number | null;
  requestId: string;
};

export type Endpoint = 'chat.completions' | 'embeddings' | 'messages';

/** One way to serve the requested model: a provider and the model name it knows. */
export type Candidate = { provider: LiveProvider; model: string };

export type LimitHeaders = Record<string, string>;

export type Outcome = {
  status: number;
  errorCode?: string | null;
  usage?: Usage | undefined;
  /** Used when the provider reported no usage (flagged as estimated). */
  estimate?: { input: number; output: number };
  ttftMs?: number | null;
};

export type BeginInput = {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  inputEstimate: number;
  maxOutputTokens: number | null;
};

export type GatewaySettings = {
  unpricedModels: 'refuse' | 'free';
  workspaceRpm: number | null;
  workspaceTpm: number | null;
  retries: number;
  totalTimeoutMs: number;
  defaultMaxOutputTokens: number;
  breakerFailures: number;
  breakerCooldownMs: number;
};

export type GatewayDeps = {
  providers: Pick<ProvidersService, 'workspace'>;
  catalog: ReadonlyMap<string, ModelPrice>;
  limiter: RateLimiter;
  credits: CreditGate;
  usage: Pick<UsageRecorder, 'record'>;
  clock: Clock;
  logger: Logger;
  settings: GatewaySettings;
  /** Waits between attempts; tests may shorten it. */
  sleep?: (ms: number) => Promise<void>;
  /** Chooses weighted routes' first target; tests may fix it. */
  random?: () => number;
  /** False while the user restricted the processing of their data (privacy's in-memory set). */
  processingAllowed?: (userId: string) => boolean;
};

const sleepFor = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The AppError a client sees for an upstream failure: fixed message, no upstream body. */
export function clientError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof UpstreamError) {
    if (err.code === 'upstream_aborted') return new AppError('upstream_error', 'The request was aborted.');
    return new AppError(err.code, err.message, {
      ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: Math.ceil(err.retryAfterSeconds) } : {}),
    });
  }
  return new AppError('upstream_error', 'The upstream provider failed.');
}

/** The input tokens an embeddings request is reserved for: its texts' characters, a token array's length. */
function embeddingsInputEstimate(input: EmbeddingsRequest['input']): number {
  const inputs: unknown[] = typeof input === 'string' ? [input] : input;
  let n = 0;
  for (const i of inputs) n += typeof i === 'string' ? estimateTokens(i) : Array.isArray(i) ? i.length : 1;
  return n;
}

/**
 * The gateway's governance around each call: model allow-list, routing to candidates,
 * price, rate limits, credit reservation, fallback with bounded retries, circuit breaking,
 * and exactly one usage event per call.
 */
export function gatewayService(deps: GatewayDeps) {
  const { settings, clock } = deps;
  const sleep = deps.sleep ?? sleepFor;
  const random = deps.random ?? Math.random;
  const breakers = new Map<string, { failures: number; openUntil: number }>();
  const background = new Set<Promise<unknown>>();

  function track(p: Promise<unknown>) {
    const tracked = p.catch(() => deps.logger.warn('gateway: a settlement or limit update failed'));
    background.add(tracked);
    void tracked.finally(() => background.delete(tracked));
  }

  function breakerOpen(providerId: string): boolean {
    const b = breakers.get(providerId);
    return !!b && b.openUntil > clock.now().getTime();
  }

  function noteResult(providerId: string, ok: boolean) {
    if (ok) {
      breakers.delete(providerId);
      return;
    }
    const b = breakers.get(providerId) ?? { failures: 0, openUntil: 0 };
    b.failures += 1;
    if (b.failures >= settings.breakerFailures) {
      b.openUntil = clock.now().getTime() + settings.breakerCooldownMs;
      b.failures = 0;
    }
    breakers.set(providerId, b);
  }

  /** A direct model name: `name/model` picks one provider; otherwise every provider listing it, in name order. */
  function directCandidates(providers: LiveProvider[], model: string, providerName?: string): Candidate[] {
    if (providerName) {
      const p = providers.find((x) => x.name === providerName);
      return p ? [{ provider: p, model }] : [];
    }
    const slash = model.indexOf('/');
    if (slash > 0) {
      const named = providers.find((p) => p.name === model.slice(0, slash));
      if (named) return [{ provider: named, model: model.slice(slash + 1) }];
    }
    return providers.filter((p) => p.models.includes(model)).map((provider) => ({ provider, model }));
  }

  /** Picks an index by weight (default 1 each); `random` is in [0, 1). */
  function pickWeighted(weights: number[], random: number): number {
    const total = weights.reduce((a, b) => a + b, 0);
    if (total <= 0) return 0;
    let r = random * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i] ?? 0;
      if (r < 0) return i;
    }
    return weights.length - 1;
  }

  /**
   * What may serve `model`: an alias's targets (in order, or the weighted pick first and the
   * rest as fallbacks), else the model itself. Each provider+model appears once.
   */
  function candidatesFor(w: WorkspaceGateway, model: string): Candidate[] {
    const route = w.routes.get(model);
    if (!route) return directCandidates(w.providers, model);
    let targets = route.targets;
    if (route.strategy === 'weighted' && targets.length > 1) {
      const i = pickWeighted(
        targets.map((t) => t.weight ?? 1),
        random(),
      );
      targets = [targets[i] as (typeof targets)[number], ...targets.filter((_, j) => j !== i)];
    }
    const seen = new Set<string>();
    const out: Candidate[] = [];
    for (const t of targets) {
      for (const c of directCandidates(w.providers, t.model, t.provider)) {
        const k = `${c.provider.id}\u0000${c.model}`;
        if (seen.has(k)) continue;
        seen.add(k);
        out.push(c);
      }
    }
    return out;
  }

  /** Checks every limit that applies; returns the token counters the call's tokens go to once known. */
  async function checkLimits(caller: Caller, headers: LimitHeaders, planRpm: number | null): Promise<string[]> {
    // The stricter of the operator's limit for every workspace and the workspace plan's.
    const workspaceRpm =
      settings.workspaceRpm && planRpm ? Math.min(settings.workspaceRpm, planRpm) : (settings.workspaceRpm ?? planRpm);
    const all: Array<{ key: string; limit: number | null; kind: 'requests' | 'tokens'; scope: 'key' | 'workspace' }> = [
      { key: `k:${caller.keyId}:r`, limit: caller.keyId ? caller.rateLimitRpm : null, kind: 'requests', scope: 'key' },
      { key: `w:${caller.workspaceId}:r`, limit: workspaceRpm, kind: 'requests', scope: 'workspace' },
      { key: `k:${caller.keyId}:t`, limit: caller.keyId ? caller.rateLimitTpm : null, kind: 'tokens', scope: 'key' },
      { key: `w:${caller.workspaceId}:t`, limit: settings.workspaceTpm, kind: 'tokens', scope: 'workspace' },
    ];
    const checks = all.flatMap((c) => (c.limit ? [{ ...c, limit: c.limit }] : []));
    for (const c of checks) {
      // Requests count when they start; tokens when they are known, so a window is refused once it is spent.
      const d =
        c.kind === 'requests' ? await deps.limiter.consume(c.key, 1, c.limit) : await deps.limiter.peek(c.key, c.limit);
      const reset = Math.max(1, Math.ceil(d.resetMs / 1000));
      if (c.scope === 'key' || !headers[`x-ratelimit-limit-${c.kind}`]) {
        headers[`x-ratelimit-limit-${c.kind}`] = String(c.limit);
        headers[`x-ratelimit-remaining-${c.kind}`] = String(d.remaining);
        headers[`x-ratelimit-reset-${c.kind}`] = `${reset}s`;
      }
      if (!d.ok) {
        throw new AppError(
          'rate_limited',
          `The ${c.scope === 'key' ? 'API key' : 'workspace'} is over its limit of ${c.limit} ${c.kind} per minute.`,
          { retryAfterSeconds: reset },
        );
      }
    }
    return checks.filter((c) => c.kind === 'tokens').map((c) => c.key);
  }

  /**
   * A whole (not streamed) call's attempts: the answer, or, when every attempt failed, the
   * call finished with the client's error (499 `client_closed` when the caller went away),
   * which is thrown.
   */
  async function attemptOrFail<T>(
    call: Awaited<ReturnType<typeof begin>>,
    fn: (c: Candidate, opts: CallOptions) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    try {
      return await call.attempt(fn, signal);
    } catch (err) {
      const e = clientError(err);
      call.finish({
        status: signal?.aborted ? 499 : e.status,
        errorCode: signal?.aborted ? 'client_closed' : e.code,
      });
      throw e;
    }
  }

  /**
   * Checks and reserves everything a call needs before it goes upstream. The returned
   * call runs attempts (`attempt`) and ends with `finish`, which records the usage event
   * (journal first) and settles the reservation.
   */
  async function begin(caller: Caller, input: BeginInput) {
    try {
      return await start(caller, input);
    } catch (err) {
      // A refused call is metered too (429, 402, 403, 404...): one event per call, whatever the outcome.
      if (err instanceof AppError) recordRefusal(caller, input, err);
      throw err;
    }
  }

  return {
    /** Waits for settlements and limit updates still running (tests, shutdown). */
    async idle() {
      while (background.size > 0) await Promise.all([...background]);
      // Credits held in leases are settled too: what idle answers is the ledger's final word.
      await deps.credits.flush?.();
    },

    /** The context window of a model (or an alias's first target) the workspace calls; null when no price says. */
    async contextWindow(workspaceId: string, model: string): Promise<number | null> {
      const w = await deps.providers.workspace(workspaceId);
      const target = w.routes.get(model)?.targets[0]?.model ?? model;
      return priceOf(w, deps.catalog, target)?.contextWindow ?? null;
    },

    /** Every model the workspace can call, with its provider and price. */
    async listModels(workspaceId: string) {
      const w = await deps.providers.workspace(workspaceId);
      const seen = new Set<string>();
      const out: { id: string; provider: string; price: ModelPrice | null }[] = [];
      for (const p of w.providers) {
        for (const m of p.models) {
          if (seen.has(m)) continue;
          seen.add(m);
          out.push({ id: m, provider: p.name, price: priceOf(w, deps.catalog, m) ?? null });
        }
      }
      for (const [alias, route] of w.routes) {
        if (seen.has(alias)) continue;
        const first = route.targets[0];
        out.push({
          id: alias,
          provider: 'route',
          price: first ? (priceOf(w, deps.catalog, first.model) ?? null) : null,
        });
      }
      return out;
    },

    begin,

    recordRefusal,

    /**
     * One whole (not streamed) chat completion for Berth's own callers (agent runs): the same
     * governance, reservation, fallback and usage event as a /v1 call. Throws the AppError a
     * client would get (`insufficient_credits`, `model_not_found`, `upstream_timeout`...).
     *
     * @example const { response, usage } = await gateway.complete(caller, { model, messages }, signal);
     */
    async complete(
      caller: Caller,
      body: ChatCompletionRequest,
      signal?: AbortSignal,
    ): Promise<{ response: ChatCompletionResponse; usage: UsageEventRow; provider: string; model: string }> {
      const inputEstimate = inputEstimateOf(body.messages);
      const maxOut = body.max_completion_tokens ?? body.max_tokens ?? null;
      const input = { endpoint: 'chat.completions' as const, model: body.model, stream: false, inputEstimate };
      const call = await begin(caller, { ...input, maxOutputTokens: maxOut });
      const response = await attemptOrFail(
        call,
        (c, opts) => c.provider.adapter.chatCompletion({ ...body, model: c.model, stream: false }, opts),
        signal,
      );
      const usage = call.finish({
        status: 200,
        usage: response.usage,
        estimate: { input: inputEstimate, output: estimateFromChars(outputChars(response)) },
      }) as UsageEventRow;
      const served = call.served;
      return { response, usage, provider: served?.provider.name ?? '', model: served?.model ?? body.model };
    },

    /**
     * One embeddings call for Berth's own callers (the knowledge module's chunks and queries),
     * and the whole of /v1/embeddings: the same governance, reservation, fallback and usage
     * event (endpoint `embeddings`, no output tokens). Throws the AppError a client would get
     * (`model_not_allowed`, `insufficient_credits`, `bad_request` for a provider without an
     * embeddings API...). `onBegun` gets the call's rate-limit headers once it is admitted
     * (the /v1 route sends them).
     *
     * @example const { response, usage } = await gateway.embed(caller, { model, input: chunks }, signal);
     */
    async embed(
      caller: Caller,
      body: EmbeddingsRequest,
      signal?: AbortSignal,
      onBegun?: (limitHeaders: LimitHeaders) => void,
    ): Promise<{ response: EmbeddingsResponse; usage: UsageEventRow; provider: string; model: string }> {
      const inputEstimate = embeddingsInputEstimate(body.input);
      const input = { endpoint: 'embeddings' as const, model: body.model, stream: false, inputEstimate };
      const call = await begin(caller, { ...input, maxOutputTokens: 0 });
      onBegun?.(call.limitHeaders);
      const response = await attemptOrFail(
        call,
        (c, opts) => {
          if (!c.provider.adapter.embeddings) throw new AppError('bad_request', 'This provider has no embeddings API.');
          return c.provider.adapter.embeddings({ ...body, model: c.model }, opts);
        },
        signal,
      );
      const reported = response.usage;
      const usage = call.finish({
        status: 200,
        usage: reported
          ? { prompt_tokens: reported.prompt_tokens, completion_tokens: 0, total_tokens: reported.total_tokens }
          : undefined,
        estimate: { input: inputEstimate, output: 0 },
      }) as UsageEventRow;
      const served = call.served;
      return { response, usage, provider: served?.provider.name ?? '', model: served?.model ?? body.model };
    },
  };

  async function start(caller: Caller, input: BeginInput) {
    const started = performance.now();
    const limitHeaders: LimitHeaders = {};
    if (caller.allowedModels && !caller.allowedModels.includes(input.model)) {
      throw new AppError('model_not_allowed', `This API key may not call ${input.model}.`);
    }
    const w = await deps.providers.workspace(caller.workspaceId);
    if (w.status === 'suspended') {
      throw new AppError(
        'workspace_suspended',
        'This workspace is suspended; its calls are refused until an operator reactivates it.',
      );
    }
    if (w.status === 'restricted') {
      throw new AppError(
        'workspace_restricted',
        "Processing of this workspace's data is restricted; the gateway processes nothing new.",
      );
    }
    if (caller.userId && deps.processingAllowed && !deps.processingAllowed(caller.userId)) {
      throw new AppError(
        'processing_restricted',
        "Processing of this API key's owner's data is restricted at their request; the gateway processes nothing new.",
      );
    }
    const found = candidatesFor(w, input.model);
    if (found.length === 0) {
      throw new AppError('model_not_found', `No provider of this workspace serves the model ${input.model}.`);
    }
    // Each candidate at its own model's price; the reservation holds the dearest one's worst case.
    const free: ModelPrice = {
      inputMicrosPerMtok: 0,
      outputMicrosPerMtok: 0,
      cachedInputMicrosPerMtok: null,
      contextWindow: null,
    };
    const prices = new Map<Candidate, ModelPrice>();
    for (const c of found) {
      const p = priceOf(w, deps.catalog, c.model) ?? priceOf(w, deps.catalog, input.model);
      if (p) prices.set(c, p);
      else if (settings.unpricedModels === 'free') prices.set(c, free);
    }
    const candidates = found.filter((c) => prices.has(c));
    if (candidates.length === 0) {
      throw new AppError(
        'model_not_priced',
        `The model ${input.model} has no price; set one for the workspace (berth models price) to use it.`,
      );
    }
    const priceFor = (c: Candidate | null): ModelPrice =>
      (c ? prices.get(c) : undefined) ?? prices.get(candidates[0] as Candidate) ?? free;
    const tokenCounters = await checkLimits(caller, limitHeaders, w.planRpm);
    const maxOut = input.maxOutputTokens ?? settings.defaultMaxOutputTokens;
    const worstCase = Math.max(
      ...candidates.map((c) => costMicros(priceFor(c), { input: input.inputEstimate, output: maxOut, cached: 0 })),
    );
    const reservation: Reservation = await deps.credits.reserve({
      workspaceId: caller.workspaceId,
      keyId: caller.keyId,
      requestId: caller.requestId,
      amountMicros: worstCase,
    });

    let attempts = 0;
    let served: Candidate | null = null;
    /** The last candidate tried: what a failed call's usage event names. */
    let tried: Candidate | null = null;
    let finished = false;
    const deadline = started + settings.totalTimeoutMs;

    return {
      limitHeaders,
      get served() {
        return served;
      },

      /**
       * Runs `fn` against each candidate in order, retrying retryable failures (429, 5xx,
       * timeouts, connection errors) with jittered backoff, skipping providers whose circuit
       * is open while another candidate remains.
       */
      async attempt<T>(fn: (c: Candidate, opts: CallOptions) => Promise<T>, signal?: AbortSignal): Promise<T> {
        // Made only when an attempt failed: an error captures a stack, which a successful call need not pay for.
        let last: unknown;
        const usable = candidates.filter((c) => !breakerOpen(c.provider.id));
        const order = usable.length > 0 ? usable : candidates;
        for (const c of order) {
          for (let retry = 0; retry <= settings.retries; retry++) {
            const left = deadline - performance.now();
            if (left <= 0) throw new UpstreamError('upstream_timeout');
            attempts += 1;
            tried = c;
            try {
              const value = await fn(c, {
                timeoutMs: Math.min(c.provider.timeoutMs, left),
                ...(signal ? { signal } : {}),
              });
              noteResult(c.provider.id, true);
              served = c;
              return value;
            } catch (err) {
              last = err;
              if (signal?.aborted) throw new UpstreamError('upstream_aborted');
              if (!(err instanceof UpstreamError) || !err.retryable) throw err;
              noteResult(c.provider.id, false);
              if (retry < settings.retries) {
                const hinted = err.retryAfterSeconds !== undefined ? err.retryAfterSeconds * 1000 : 0;
                const backoff = Math.min(2000, 100 * 2 ** retry) * (0.5 + Math.random() / 2);
                const wait = Math.min(Math.max(hinted, backoff), 2000, Math.max(0, deadline - performance.now()));
                await sleep(wait);
              }
            }
          }
        }
        throw last ?? new UpstreamError('upstream_error');
      },

      /** Records the call's usage event (before the client gets its last byte) and settles. Once per call. */
      finish(outcome: Outcome) {
        if (finished) return;
        finished = true;
        const u = outcome.usage;
        const estimated = !u;
        const inputTokens = u ? u.prompt_tokens : (outcome.estimate?.input ?? 0);
        const outputTokens = u ? u.completion_tokens : (outcome.estimate?.output ?? 0);
        const cachedTokens = u?.prompt_tokens_details?.cached_tokens ?? 0;
        const reasoningTokens = u?.completion_tokens_details?.reasoning_tokens ?? 0;
        const cost = costMicros(priceFor(served ?? tried), {
          input: inputTokens,
          output: outputTokens,
          cached: cachedTokens,
        });
        const now = clock.now();
        const row: UsageEventRow = {
          id: newId('use', now),
          workspaceId: caller.workspaceId,
          keyId: caller.keyId,
          userId: caller.userId,
          requestId: caller.requestId,
          endpoint: input.endpoint,
          provider: (served ?? tried)?.provider.name ?? null,
          model: (served ?? tried)?.model ?? input.model,
          status: outcome.status,
          errorCode: outcome.errorCode ?? null,
          stream: input.stream,
          latencyMs: Math.max(0, Math.round(performance.now() - started)),
          ttftMs: outcome.ttftMs ?? null,
          inputTokens,
          outputTokens,
          cachedTokens,
          reasoningTokens,
          estimated,
          costMicros: cost,
          attempts,
          createdAt: now,
          creditLeaseId: reservation.leaseId ?? null,
        };
        deps.usage.record(row);
        track(
          cost > 0 || outputTokens > 0 ? deps.credits.settle(reservation, cost) : deps.credits.release(reservation),
        );
        const tokens = inputTokens + outputTokens;
        if (tokens > 0) for (const counter of tokenCounters) track(deps.limiter.add(counter, tokens));
        return row;
      },
    };
  }

  /** The usage event of a call refused before it went upstream: no tokens, no cost. */
  function recordRefusal(caller: Caller, input: Pick<BeginInput, 'endpoint' | 'model' | 'stream'>, err: AppError) {
    const now = clock.now();
    deps.usage.record({
      id: newId('use', now),
      workspaceId: caller.workspaceId,
      keyId: caller.keyId,
      userId: caller.userId,
      requestId: caller.requestId,
      endpoint: input.endpoint,
      provider: null,
      model: input.model.slice(0, 200),
      status: err.status,
      errorCode: err.code,
      stream: input.stream,
      latencyMs: 0,
      ttftMs: null,
      inputTokens: 0,
      outputTokens: 0,
      cachedTokens: 0,
      reasoningTokens: 0,
      estimated: false,
      costMicros: 0,
      attempts: 0,
      createdAt: now,
      creditLeaseId: null,
    });
  }
}

export type GatewayService = ReturnType<typeof gatewayService>;
export type GatewayCall = Awaited<ReturnType<GatewayService['begin']>>;
