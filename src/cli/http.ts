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

export async function callServer<T>(target: ServerTarget, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${target.url}${path}`, {
      method,
      headers: {
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {}),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch {
    throw new CliError(`Cannot reach Berth at ${target.url}.`, EXIT.unreachable, 'unreachable');
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) {
    const p = (parsed ?? {}) as { code?: string; detail?: string; status?: string };
    throw new CliError(
      p.detail ?? `${method} ${path} answered ${res.status}`,
      EXIT.refused,
      p.code ?? `http_${res.status}`,
    );
  }
  return parsed as T;
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
