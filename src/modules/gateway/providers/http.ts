import { UpstreamError } from '../gateway.adapter.ts';

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
 * line). `onProgress` is called for every piece received, to re-arm an idle timeout.
 */
export async function* sseEvents(
  body: AsyncIterable<Buffer | string>,
  onProgress: () => void,
): AsyncGenerator<SseEvent> {
  let buffer = '';
  let event: string | null = null;
  let data: string[] = [];
  for await (const piece of body) {
    onProgress();
    buffer += typeof piece === 'string' ? piece : piece.toString('utf8');
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
      if (line === '') {
        if (data.length > 0 || event !== null) yield { event, data: data.join('\n') };
        event = null;
        data = [];
      } else if (line.startsWith('event:')) {
        event = line.slice(6).trim();
      } else if (line.startsWith('data:')) {
        data.push(line.slice(5).replace(/^ /, ''));
      }
    }
  }
  if (data.length > 0) yield { event, data: data.join('\n') };
}
