import { jsonOf, refusal, sendRequest } from './http.ts';
import { CliError, EXIT, type Io } from './output.ts';
import { readSecret } from './prompt.ts';

/** A signed-in operator's session against a running server, for operator routes over HTTP. */
export type OperatorSession = {
  get<T>(path: string): Promise<T>;
  /** A state change (sends the session's CSRF token). */
  send<T>(method: 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<T>;
  /** Signs out (ends the session on the server). */
  close(): Promise<void>;
};

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
  const json = { accept: 'application/json' };
  const password = await readSecret(io.stdin, io.err, 'Password: ');
  let answer = await sendRequest(base, '/api/auth/login', 'POST', {
    headers: json,
    body: { email: opts.email, password },
  });
  const first = (jsonOf(answer) ?? {}) as { code?: string; challengeToken?: string };
  if (answer.status === 401 && first.code === 'mfa_challenge_required') {
    const code = opts.code ?? (await readSecret(io.stdin, io.err, 'Authenticator code: '));
    answer = await sendRequest(base, '/api/auth/login/mfa', 'POST', {
      headers: json,
      body: { challengeToken: first.challengeToken, code: code.trim() },
    });
  }
  const cookie = answer.headers.get('set-cookie')?.split(';')[0];
  if (answer.status !== 200 || !cookie) throw refusal(answer, 'Sign-in');
  const csrf = String((jsonOf(answer) as { csrfToken?: string } | null)?.csrfToken ?? '');
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const unsafe = method !== 'GET';
    const a = await sendRequest(base, path, method, {
      headers: { ...json, cookie, ...(unsafe ? { 'x-csrf-token': csrf } : {}) },
      body,
    });
    if (a.status < 200 || a.status > 299) throw refusal(a, `${method} ${path}`);
    return jsonOf(a) as T;
  };
  return {
    get: (path) => call('GET', path),
    send: (method, path, body) => call(method, path, body),
    async close() {
      await call('POST', '/api/auth/logout').catch(() => undefined);
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
