import { type Dispatcher, request } from 'undici';
import { refusal, type ServerTarget } from './http.ts';
import { CliError, EXIT } from './output.ts';

/** One server-sent event: its `id:` (a number, or null without one), `event:` and parsed `data:`. */
export type SseEvent = { id: number | null; event: string; data: unknown };

/**
 * A request that may take as long as the server does: a synchronous agent run (its time limit
 * is up to an hour) or an event stream that stays open until the run ends. No client-side
 * timeout applies; the caller ends it by destroying the body. Error answers become CliErrors
 * with the server's code (exit 4); an unreachable server exits 5.
 *
 * @example const res = await longRequest(target, 'GET', `${base}/${id}/events`, { headers: { 'last-event-id': '3' } });
 */
export async function longRequest(
  target: ServerTarget,
  method: 'GET' | 'POST',
  path: string,
  opts: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<Dispatcher.ResponseData> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(`${target.url}${path}`, {
      method,
      headers: {
        ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {}),
        ...opts.headers,
      },
      ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  } catch {
    throw new CliError(`Cannot reach Berth at ${target.url}.`, EXIT.unreachable, 'unreachable');
  }
  if (res.statusCode < 200 || res.statusCode > 299) {
    const body = Buffer.from(await res.body.arrayBuffer());
    throw refusal({ status: res.statusCode, body, headers: new Headers() }, `${method} ${path}`);
  }
  return res;
}

/** The JSON body of a long request's answer. */
export async function jsonBody<T>(res: Dispatcher.ResponseData): Promise<T> {
  return (await res.body.json()) as T;
}

function parseFrame(frame: string): SseEvent | null {
  let id: number | null = null;
  let event = 'message';
  const data: string[] = [];
  for (const line of frame.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id' && /^\d+$/.test(value)) id = Number(value);
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  try {
    return { id, event, data: JSON.parse(text) };
  } catch {
    return { id, event, data: text };
  }
}

/**
 * The events of a `text/event-stream` body, in order, as they arrive (frames split on blank
 * lines; comments, frames without data and a last frame cut off by the end of the body skipped).
 */
export async function* sseEvents(body: AsyncIterable<Buffer | string>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of body) {
    buffered += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    // A lone \r may be the first half of a \r\n split across chunks: keep it for the next one.
    const complete = buffered.endsWith('\r') ? buffered.slice(0, -1) : buffered;
    const rest = buffered.slice(complete.length);
    const text = complete.replace(/\r\n?/g, '\n');
    const frames = text.split('\n\n');
    buffered = (frames.pop() ?? '') + rest;
    for (const frame of frames) {
      const e = parseFrame(frame);
      if (e) yield e;
    }
  }
  // What is left had no blank line after it: an event cut off, which the standard discards.
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follows an event stream after event `after` until the server closes it (for a run: it
 * ended or waits for a person). A connection that breaks is opened again with
 * `Last-Event-ID`, so no event is lost or repeated; after 5 failed attempts in a row it gives
 * up (exit 5). Refusals, a server not reached the first time and CliErrors `onEvent` throws
 * end it at once.
 */
export async function followEvents(target: ServerTarget, path: string, after: number, onEvent: (e: SseEvent) => void) {
  let last = after;
  let failures = 0;
  let connected = false;
  for (;;) {
    let res: Awaited<ReturnType<typeof longRequest>> | null = null;
    try {
      res = await longRequest(target, 'GET', path, {
        headers: { accept: 'text/event-stream', 'last-event-id': String(last) },
      });
      connected = true;
      for await (const e of sseEvents(res.body)) {
        onEvent(e);
        if (e.id !== null) last = e.id;
        failures = 0;
      }
      return;
    } catch (err) {
      res?.body.destroy();
      // Refusals, the stream's own errors and a server never reached are final; a broken connection is not.
      if (err instanceof CliError && (err.code !== 'unreachable' || !connected)) throw err;
      failures += 1;
      if (failures > 5) {
        throw new CliError(
          `The event stream broke and could not be resumed after event ${last}.`,
          EXIT.unreachable,
          'stream_broken',
        );
      }
      await sleep(250 * 2 ** (failures - 1));
    }
  }
}
