import type { LookupFunction } from 'node:net';
import { type Dispatcher, Pool } from 'undici';
import { type CallOptions, UpstreamError, upstreamErrorForStatus } from '../gateway.adapter.ts';

// What every provider adapter shares about one HTTP attempt: its timeout (re-armed while a
// stream makes progress), the caller's abort, and the mapping of failures to UpstreamError.

export type Attempt = { signal: AbortSignal; timedOut: () => boolean; arm: () => void; done: () => void };

export function startAttempt(timeoutMs: number, outer: AbortSignal | undefined): Attempt {
  const controller = new AbortController();
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => controller.abort();
  outer?.addEventListener('abort', onAbort, { once: true });
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
  };
  arm();
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    arm,
    done: () => {
      if (timer) clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
    },
  };
}

export function toUpstreamError(err: unknown, attempt: Attempt, outer: AbortSignal | undefined): UpstreamError {
  if (err instanceof UpstreamError) return err;
  if (attempt.timedOut()) return new UpstreamError('upstream_timeout');
  if (outer?.aborted) return new UpstreamError('upstream_aborted');
  // Connection refused/reset, TLS failures, malformed HTTP: the cause may quote bytes we sent, so it is dropped.
  return new UpstreamError('upstream_error');
}

export function retryAfter(headers: Record<string, string | string[] | undefined>): number | undefined {
  const raw = headers['retry-after'];
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (value === undefined) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export type SseEvent = { event: string | null; data: string };

/**
 * Splits a server-sent events body into events (`event:` and `data:` lines up to a blank
 * line). `push` takes each piece of the body as it arrives and returns the events it
 * completed, so a stream costs one step per network read, not one per event; `end` returns
 * an event the body ended inside of.
 */
export function sseSplitter() {
  let buffer = '';
  let event: string | null = null;
  let data: string[] = [];
  return {
    push(piece: Buffer | string): SseEvent[] {
      buffer += typeof piece === 'string' ? piece : piece.toString('utf8');
      const batch: SseEvent[] = [];
      let start = 0;
      let newline = buffer.indexOf('\n');
      while (newline !== -1) {
        const end = newline > start && buffer.charCodeAt(newline - 1) === 13 ? newline - 1 : newline;
        const line = buffer.slice(start, end);
        start = newline + 1;
        newline = buffer.indexOf('\n', start);
        if (line === '') {
          if (data.length > 0 || event !== null) batch.push({ event, data: data.join('\n') });
          event = null;
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5));
        } else if (line.startsWith('event:')) {
          event = line.slice(6).trim();
        }
      }
      buffer = buffer.slice(start);
      return batch;
    },
    end(): SseEvent[] {
      return data.length > 0 ? [{ event, data: data.join('\n') }] : [];
    },
  };
}

/** How long a stream's body may take to end after its reader has stopped, before its connection is dropped. */
const DRAIN_MS = 5_000;

/**
 * A body its reader is done with. Read to its end (usually already there: the end marker
 * comes with the last bytes), the connection goes back to the pool for the next call;
 * destroyed, it would be closed. A body that does not end soon is destroyed.
 */
function release(raw: Dispatcher.ResponseData['body']) {
  if (raw.destroyed || raw.readableEnded) return;
  const timer = setTimeout(() => raw.destroy(), DRAIN_MS);
  timer.unref();
  raw.once('close', () => clearTimeout(timer));
  raw.on('error', () => undefined);
  raw.resume();
}

export type UpstreamClientOptions = {
  baseUrl: string;
  headers: Record<string, string>;
  timeoutMs: number;
  connections?: number | undefined;
  /** The socket's DNS lookup: the egress guard. */
  lookup?: LookupFunction | undefined;
  /** Maps a vendor's own status codes onto standard ones (e.g. Anthropic's 529 overloaded to 503). */
  mapStatus?: (status: number) => number;
};

/**
 * The HTTP side every adapter shares: one undici Pool per provider origin, JSON calls and
 * SSE streams with per-attempt timeouts, caller aborts, and failures as UpstreamError.
 * Error bodies are discarded unread: they often quote the prompt.
 */
export function upstreamClient(opts: UpstreamClientOptions) {
  const url = new URL(opts.baseUrl);
  const basePath = url.pathname.replace(/\/+$/, '');
  const pool = new Pool(url.origin, {
    connections: opts.connections ?? 64,
    pipelining: 1,
    ...(opts.lookup ? { connect: { lookup: opts.lookup } } : {}),
  });
  const mapStatus = opts.mapStatus ?? ((s: number) => s);

  async function send(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    callOpts: CallOptions | undefined,
    attempt: Attempt,
    contentType: string,
  ) {
    if (callOpts?.signal?.aborted) throw new UpstreamError('upstream_aborted');
    const res = await pool.request({
      method,
      path: `${basePath}${path}`,
      headers: opts.headers,
      body: body === null ? null : JSON.stringify(body),
      signal: attempt.signal,
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    if (res.statusCode >= 400) {
      await res.body.dump().catch(() => undefined);
      throw upstreamErrorForStatus(mapStatus(res.statusCode), retryAfter(res.headers));
    }
    if (!String(res.headers['content-type'] ?? '').includes(contentType)) {
      await res.body.dump().catch(() => undefined);
      throw new UpstreamError('upstream_error', { status: res.statusCode });
    }
    return res;
  }

  return {
    /** One JSON request and its parsed JSON answer, checked by `valid`. */
    async json<T>(
      method: 'GET' | 'POST',
      path: string,
      body: unknown,
      callOpts: CallOptions | undefined,
      valid: (v: Record<string, unknown>) => boolean,
    ): Promise<T> {
      const attempt = startAttempt(callOpts?.timeoutMs ?? opts.timeoutMs, callOpts?.signal);
      try {
        const res = await send(method, path, body, callOpts, attempt, 'json');
        let parsed: unknown;
        try {
          parsed = JSON.parse(await res.body.text());
        } catch {
          throw new UpstreamError('upstream_error', { status: res.statusCode });
        }
        if (!isObject(parsed) || !valid(parsed)) throw new UpstreamError('upstream_error', { status: res.statusCode });
        return parsed as T;
      } catch (err) {
        throw toUpstreamError(err, attempt, callOpts?.signal);
      } finally {
        attempt.done();
      }
    },

    /**
     * Opens a server-sent events stream (POST). The timeout applies until the headers and
     * then to every silence between chunks. `isEnd` recognises the vendor's end-of-stream
     * event: a reader that stops after it leaves the connection to be reused; one that
     * stops earlier (the client left) closes it, so the provider stops generating.
     */
    async stream(path: string, body: unknown, callOpts: CallOptions | undefined, isEnd: (ev: SseEvent) => boolean) {
      const attempt = startAttempt(callOpts?.timeoutMs ?? opts.timeoutMs, callOpts?.signal);
      let res: Awaited<ReturnType<typeof send>>;
      try {
        res = await send('POST', path, body, callOpts, attempt, 'text/event-stream');
      } catch (err) {
        attempt.done();
        throw toUpstreamError(err, attempt, callOpts?.signal);
      }
      const raw = res.body;
      async function* events(): AsyncGenerator<SseEvent[]> {
        let ended = false;
        try {
          attempt.arm();
          const split = sseSplitter();
          for await (const piece of raw.iterator({ destroyOnReturn: false })) {
            // Every piece re-arms the silence timeout; a piece that completes no event yields nothing.
            attempt.arm();
            const batch = split.push(piece as Buffer);
            if (batch.length === 0) continue;
            ended = batch.some(isEnd);
            yield batch;
          }
          const rest = split.end();
          if (rest.length > 0) {
            ended = rest.some(isEnd);
            yield rest;
          }
        } catch (err) {
          throw toUpstreamError(err, attempt, callOpts?.signal);
        } finally {
          attempt.done();
          if (ended) release(raw);
          else if (!raw.destroyed) raw.destroy();
        }
      }
      return { events: events(), status: res.statusCode };
    },

    close: () => pool.close(),
  };
}
