import { CliError, EXIT } from './output.ts';

/**
 * How user-level commands reach a running server: `--url` / `BERTH_URL` and
 * `--api-key` / `BERTH_API_KEY`. Errors the server answers (problem+json) become CliErrors
 * with the server's code and exit code 4; an unreachable server exits 5.
 */
export type ServerTarget = { url: string; apiKey?: string };

export function serverTarget(
  opts: { url?: string; apiKey?: string },
  env: Record<string, string | undefined>,
): ServerTarget {
  const url = (opts.url ?? env.BERTH_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  try {
    new URL(url);
  } catch {
    throw new CliError(`Not a URL: ${url}`, EXIT.usage, 'invalid_url');
  }
  const apiKey = opts.apiKey ?? env.BERTH_API_KEY;
  return apiKey ? { url, apiKey } : { url };
}

/** What a server answered: status, the body's bytes, the headers. */
export type RawAnswer = { status: number; body: Buffer; headers: Headers };

/**
 * One request to a running server (30 s at most); exit 5 `unreachable` when it cannot be
 * reached. A JSON `body` is sent as such. The answer is returned whatever its status.
 */
export async function sendRequest(
  base: string,
  path: string,
  method: string,
  opts: { headers?: Record<string, string>; body?: unknown } = {},
): Promise<RawAnswer> {
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...opts.headers,
      },
      ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch {
    throw new CliError(`Cannot reach Berth at ${base}.`, EXIT.unreachable, 'unreachable');
  }
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

/** The body as JSON, or null when it is empty or not JSON. */
export function jsonOf(a: RawAnswer): unknown {
  try {
    return a.body.length > 0 ? JSON.parse(a.body.toString('utf8')) : null;
  } catch {
    return null;
  }
}

/** An error answer as a CliError with the server's code (problem+json) and exit code 4. */
export function refusal(a: RawAnswer, what: string): CliError {
  const p = (jsonOf(a) ?? {}) as { code?: unknown; detail?: unknown };
  return new CliError(
    typeof p.detail === 'string' ? p.detail : `${what} answered ${a.status}`,
    EXIT.refused,
    typeof p.code === 'string' ? p.code : `http_${a.status}`,
  );
}

export async function callServer<T>(target: ServerTarget, method: string, path: string, body?: unknown): Promise<T> {
  const a = await sendRequest(target.url, path, method, {
    headers: { accept: 'application/json', ...(target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {}) },
    body,
  });
  if (a.status < 200 || a.status > 299) throw refusal(a, `${method} ${path}`);
  return jsonOf(a) as T;
}

/** The options of user-level commands that work in one workspace over HTTP. */
export type WorkspaceHttpOpts = { url?: string; apiKey?: string; workspace?: string };

/**
 * The server and the workspace for a user-level command: `--workspace`, or else the
 * workspace of the API key itself (`GET /api/keys/self`). These commands authenticate with
 * an API key (`--api-key` / `BERTH_API_KEY`); without one they stop with exit code 2.
 *
 * @example const { target, workspaceId } = await workspaceOf(opts, io.env);
 */
export async function workspaceOf(
  opts: WorkspaceHttpOpts,
  env: Record<string, string | undefined>,
): Promise<{ target: ServerTarget; workspaceId: string }> {
  const target = serverTarget(opts, env);
  if (!target.apiKey) {
    throw new CliError(
      'Pass an API key with --api-key or BERTH_API_KEY (its own workspace is used unless you name one with --workspace).',
      EXIT.usage,
      'api_key_required',
    );
  }
  const workspaceId =
    opts.workspace ?? (await callServer<{ workspaceId: string }>(target, 'GET', '/api/keys/self')).workspaceId;
  return { target, workspaceId };
}
