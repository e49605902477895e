import type { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { AppError } from '../../platform/errors.ts';
import { assertEgress, EgressDenied, type EgressGuard, egressGuard } from '../../platform/http/egress.ts';
import { readLimited } from '../../platform/http/limited-body.ts';

/**
 * Documents uploaded by URL: one GET through the SSRF guard (the resolved address is checked
 * at connect time; private addresses need `BERTH_EGRESS_ALLOW`), no redirects, a time limit
 * and a size limit at which reading stops. The remote's error bodies are never relayed.
 */

export type FetchTransport = { egress: EgressGuard; dispatcher: Dispatcher };

export function fetchTransport(egressAllow: string | undefined): FetchTransport {
  const egress = egressGuard(egressAllow);
  return { egress, dispatcher: new Agent({ connect: { lookup: egress.lookup }, connections: 8 }) };
}

export type FetchedFile = { filename: string; contentType: string | null; bytes: Buffer };

function isEgressRefusal(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 6; depth++) {
    if (e instanceof EgressDenied || (e as { code?: unknown }).code === 'EGRESS_DENIED') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * A file name safe to store and show: its last path segment, without control characters
 * (C0, DEL, C1: a terminal would act on them), trimmed, at most 255 characters; `fallback`
 * when nothing is left.
 */
export function cleanFilename(name: string | undefined, fallback: string): string {
  const base = (name ?? '').split(/[\\/]/).pop() ?? '';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  const printable = base.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim();
  return printable.slice(0, 255) || fallback;
}

/** The file name a URL suggests: its last path segment, else its host. */
export function filenameOf(url: URL): string {
  const raw = url.pathname.split('/').filter(Boolean).pop() ?? '';
  let last = raw;
  try {
    last = decodeURIComponent(raw);
  } catch {
    // A malformed escape (%E0%A4%A): the segment as written.
  }
  return cleanFilename(last, url.hostname);
}

/** Fetches one document. Throws AppError: `egress_denied`, `payload_too_large`, `upstream_timeout`, `upstream_error`. */
export async function fetchDocument(
  transport: FetchTransport,
  url: URL,
  limits: { maxBytes: number; timeoutMs: number },
): Promise<FetchedFile> {
  assertEgress(transport.egress, url);
  const timer = new AbortController();
  const timeout = setTimeout(() => timer.abort(), limits.timeoutMs);
  let body: Readable | null = null;
  try {
    const res = await request(url, {
      dispatcher: transport.dispatcher,
      method: 'GET',
      headers: { accept: '*/*', 'user-agent': 'Berth knowledge fetcher' },
      signal: timer.signal,
    });
    body = res.body;
    // A body left unread is destroyed below; its abort is expected, not an error to surface.
    body.on('error', () => undefined);
    if (res.statusCode < 200 || res.statusCode >= 300) {
      throw new AppError('upstream_error', `${url.hostname} answered ${res.statusCode}.`);
    }
    const declared = Number(res.headers['content-length'] ?? Number.NaN);
    if (declared > limits.maxBytes) {
      throw new AppError('payload_too_large', `The document is larger than ${limits.maxBytes} bytes.`);
    }
    const bytes = await readLimited(res.body, limits.maxBytes);
    if (bytes === null) {
      throw new AppError('payload_too_large', `The document is larger than ${limits.maxBytes} bytes.`);
    }
    const type = res.headers['content-type'];
    const contentType = ((Array.isArray(type) ? type[0] : type) ?? '').split(';')[0]?.trim().slice(0, 255) || null;
    return { filename: filenameOf(url), contentType, bytes };
  } catch (err) {
    if (err instanceof AppError) throw err;
    if (timer.signal.aborted) throw new AppError('upstream_timeout', `${url.hostname} did not answer in time.`);
    if (isEgressRefusal(err)) {
      throw new AppError('egress_denied', `Outbound connections to ${url.hostname} are not allowed.`);
    }
    throw new AppError('upstream_error', `${url.hostname} could not be reached.`);
  } finally {
    clearTimeout(timeout);
    if (body && !body.destroyed) body.destroy();
  }
}
