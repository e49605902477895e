import { CliError, EXIT, type Io } from './output.ts';
import { readSecret } from './prompt.ts';

/** A signed-in operator's session against a running server, for operator routes over HTTP. */
export type OperatorSession = {
  get<T>(path: string): Promise<T>;
  /** A state change (sends the session's CSRF token). */
  send<T>(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T>;
  /** Signs out (ends the session on the server). */
  close(): Promise<void>;
};

type Answer = { status: number; body: Record<string, unknown>; cookie: string | null };

async function send(url: string, method: string, init: { body?: unknown; headers?: Record<string, string> } = {}) {
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: {
        accept: 'application/json',
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...init.headers,
      },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch {
    throw new CliError(`Cannot reach Berth at ${new URL(url).origin}.`, EXIT.unreachable, 'unreachable');
  }
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    body = {};
  }
  const cookie = res.headers.get('set-cookie')?.split(';')[0] ?? null;
  return { status: res.status, body, cookie } satisfies Answer;
}

function refused(a: Answer, what: string): CliError {
  const detail = typeof a.body.detail === 'string' ? a.body.detail : `${what} answered ${a.status}`;
  const code = typeof a.body.code === 'string' ? a.body.code : `http_${a.status}`;
  return new CliError(detail, EXIT.refused, code);
}

/**
 * Signs in as an operator with email and password (read from the terminal, or the first
 * line of stdin), asking for the authenticator code when the account has 2FA (or taking
 * `--code`). The session cookie lives in memory for this command only.
 */
export async function operatorSession(
  io: Io,
  opts: { url: string; email: string; code?: string | undefined },
): Promise<OperatorSession> {
  const base = opts.url.replace(/\/+$/, '');
  const password = await readSecret(io.stdin, io.err, 'Password: ');
  let answer = await send(`${base}/api/auth/login`, 'POST', { body: { email: opts.email, password } });
  if (answer.status === 401 && answer.body.code === 'mfa_challenge_required') {
    const code = opts.code ?? (await readSecret(io.stdin, io.err, 'Authenticator code: '));
    answer = await send(`${base}/api/auth/login/mfa`, 'POST', {
      body: { challengeToken: answer.body.challengeToken, code: code.trim() },
    });
  }
  if (answer.status !== 200 || !answer.cookie) throw refused(answer, 'Sign-in');
  const cookie = answer.cookie;
  const csrf = String(answer.body.csrfToken ?? '');
  return {
    async get<T>(path: string): Promise<T> {
      const a = await send(`${base}${path}`, 'GET', { headers: { cookie } });
      if (a.status !== 200) throw refused(a, `GET ${path}`);
      return a.body as T;
    },
    async send<T>(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T> {
      const a = await send(`${base}${path}`, method, { headers: { cookie, 'x-csrf-token': csrf }, body });
      if (a.status < 200 || a.status > 299) throw refused(a, `${method} ${path}`);
      return a.body as T;
    },
    async close() {
      await send(`${base}/api/auth/logout`, 'POST', { headers: { cookie, 'x-csrf-token': csrf } }).catch(
        () => undefined,
      );
    },
  };
}

/** The options of an operator command that can also run over HTTP against a running server. */
export type OperatorHttpOpts = { url?: string; email?: string; code?: string };

/** Adds `--url`, `--email` and `--code` to an operator command. */
export function withOperatorHttp<C extends { option(flags: string, description: string): C }>(cmd: C): C {
  return cmd
    .option('--url <url>', "a running server's URL: sign in there as an operator instead of opening the database")
    .option('--email <email>', "the operator's email (with --url; the password is read from the terminal or stdin)")
    .option('--code <code>', "the operator's authenticator code, if 2FA is on (asked for otherwise)");
}

/** Runs `fn` in an operator session on `opts.url` (signed out after). */
export async function asOperator<T>(
  io: Io,
  opts: OperatorHttpOpts & { url: string },
  fn: (session: OperatorSession) => Promise<T>,
): Promise<T> {
  if (!opts.email) throw new CliError('--email: the operator to sign in as (with --url).', EXIT.usage, 'usage');
  const session = await operatorSession(io, { url: opts.url, email: opts.email, code: opts.code });
  try {
    return await fn(session);
  } finally {
    await session.close();
  }
}
