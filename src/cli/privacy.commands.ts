import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import type { Command } from 'commander';
import type { DeletionView, ExportView, RequestView, RestrictionView } from '../modules/privacy/index.ts';
import { jsonOf, refusal, sendRequest, serverTarget } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { type OperatorSession, operatorSession } from './operator-session.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { readSecret } from './prompt.ts';
import { registerPrivacyDocumentCommands } from './subprocessors.commands.ts';

/**
 * `berth privacy ...`: a data subject's rights over HTTP, as the signed-in user, and the
 * operators' view of privacy requests.
 *
 * Layout (one function per group of subcommands, all registered in `registerPrivacyCommands`):
 * - restrict | unrestrict: the signed-in user's restriction of processing (Art. 18)
 * - requests: operators, every privacy request and its deadline
 * - export, delete, records: registered below by their own parts
 *
 * The user's commands sign in with `--email` (the password from the terminal or the first
 * line of stdin; the authenticator code asked for, or `--code`), act, and sign out. Privacy
 * rights are the account's, not a workspace's, so an API key cannot exercise them.
 */

/** The options of a command that signs in as a user (or operator) on a running server. */
export type SignInOpts = { url?: string; email?: string; code?: string };

/** Adds `--url`, `--email` and `--code` to a command that signs in. */
export function withSignIn(cmd: Command, who = 'your'): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--email <email>', `${who} account's email (BERTH_EMAIL); the password is read from the terminal or stdin`)
    .option('--code <code>', 'the authenticator code, if 2FA is on (asked for otherwise)');
}

/** Signs in with the command's options, runs `fn` in that session, signs out. */
export async function asSignedIn<T>(io: Io, opts: SignInOpts, fn: (session: OperatorSession) => Promise<T>) {
  const { url } = serverTarget({ ...(opts.url ? { url: opts.url } : {}) }, io.env);
  const email = opts.email ?? io.env.BERTH_EMAIL;
  if (!email) throw new CliError('--email (or BERTH_EMAIL): the account to sign in as.', EXIT.usage, 'usage');
  const session = await operatorSession(io, { url, email, code: opts.code });
  try {
    return await fn(session);
  } finally {
    await session.close();
  }
}

function describeRestriction(v: RestrictionView): string {
  return v.restricted
    ? `Processing of your data is restricted (since ${v.since}): the gateway refuses your API keys and agents do not run for you. Your data is kept. Lift it with \`berth privacy unrestrict\`.`
    : 'Processing of your data is not restricted.';
}

function describeRequest(r: RequestView): string {
  const state = r.overdue ? `${r.status}, OVERDUE` : r.status;
  const ws = r.workspaceId ? ` workspace ${r.workspaceId}` : '';
  const done = r.completedAt ? `, closed ${r.completedAt}` : '';
  return `${r.id}  ${r.type.padEnd(13)}  ${state.padEnd(20)}  ${r.userId}${ws}  received ${r.receivedAt}, due ${r.dueAt}${done}`;
}

/** `berth privacy restrict|unrestrict`, as the signed-in user. */
function registerRestrictionCommands(privacy: Command, io: Io, globals: () => GlobalOptions) {
  withSignIn(
    privacy
      .command('restrict')
      .description(
        'Restrict processing of your data (GDPR Art. 18): your API keys are refused and agents stop; nothing is deleted.',
      ),
  ).action(async (opts: SignInOpts) => {
    const view = await asSignedIn(io, opts, (s) => s.send<RestrictionView>('POST', '/api/me/privacy/restriction'));
    emit(io, Boolean(globals().json), view, describeRestriction(view));
  });

  withSignIn(privacy.command('unrestrict').description('Lift the restriction: processing resumes.')).action(
    async (opts: SignInOpts) => {
      const view = await asSignedIn(io, opts, (s) => s.send<RestrictionView>('DELETE', '/api/me/privacy/restriction'));
      emit(io, Boolean(globals().json), view, describeRestriction(view));
    },
  );
}

/** `berth privacy requests`, for operators. */
function registerRequestCommands(privacy: Command, io: Io, globals: () => GlobalOptions) {
  type Opts = SignInOpts & {
    status?: string;
    type?: string;
    overdue?: boolean;
    limit?: string;
    cursor?: string;
  };
  withSignIn(
    privacy
      .command('requests')
      .description('Operators: privacy requests, newest first, with their due date (one month after receipt).')
      .option('--status <status>', 'received, in_progress, completed, rejected or cancelled')
      .option('--type <type>', 'access, portability, erasure, rectification, restriction or objection')
      .option('--overdue', 'only open requests past their due date')
      .option('--limit <n>', 'at most this many (default 100)')
      .option('--cursor <id>', 'the last id of the previous page'),
    'the operator',
  ).action(async (opts: Opts) => {
    const query = new URLSearchParams();
    if (opts.status) query.set('status', opts.status);
    if (opts.type) query.set('type', opts.type);
    if (opts.overdue) query.set('overdue', 'true');
    if (opts.limit) query.set('limit', opts.limit);
    if (opts.cursor) query.set('cursor', opts.cursor);
    const qs = query.size > 0 ? `?${query}` : '';
    const list = await asSignedIn(io, opts, (s) =>
      s.get<{ data: RequestView[]; nextCursor: string | null }>(`/api/operator/privacy/requests${qs}`),
    );
    const lines = list.data.map(describeRequest);
    if (list.nextCursor) lines.push(`(more: --cursor ${list.nextCursor})`);
    emit(io, Boolean(globals().json), list, lines.length ? lines.join('\n') : 'No privacy requests.');
  });
}

function describeExport(v: ExportView): string {
  const what = v.kind === 'user' ? 'your data' : `workspace ${v.workspaceId}`;
  switch (v.status) {
    case 'pending':
    case 'building':
      return `Export ${v.id} of ${what} is being prepared (${v.status}). A download link will be emailed to you; fetch it with \`berth privacy download <link>\`.`;
    case 'ready':
      return `Export ${v.id} of ${what} is ready (${v.rowCount} records): the download link was emailed to you and works once, until ${v.expiresAt}. Fetch it with \`berth privacy download <link>\`.`;
    case 'downloaded':
      return `Export ${v.id} of ${what} was downloaded at ${v.downloadedAt}.`;
    default:
      return `Export ${v.id} of ${what} could not be built: ask for a new one.`;
  }
}

/**
 * `berth privacy export` (as the signed-in user: asks for an export of their data, or with
 * `--workspace` of a workspace they own, optionally waiting until it is ready) and
 * `berth privacy download <link>` (fetches the archive through the emailed single-use link).
 */
function registerExportCommands(privacy: Command, io: Io, globals: () => GlobalOptions) {
  type Opts = SignInOpts & { workspace?: string; wait?: boolean; timeout: string };
  withSignIn(
    privacy
      .command('export')
      .description(
        'Ask for an export of every record Berth holds about you (GDPR Art. 15 and 20); a single-use download link is emailed when it is ready.',
      )
      .option('--workspace <id>', 'export a workspace you own instead of your own data')
      .option('--wait', 'wait until the archive is ready (its link is in your email)')
      .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '600'),
  ).action(async (opts: Opts) => {
    const path = opts.workspace
      ? `/api/workspaces/${encodeURIComponent(opts.workspace)}/privacy/exports`
      : '/api/me/privacy/exports';
    const timeoutMs = Number(opts.timeout) * 1000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new CliError('--timeout: a number of seconds.', EXIT.usage, 'usage');
    }
    const view = await asSignedIn(io, opts, async (s) => {
      let v = await s.send<ExportView>('POST', path);
      const until = Date.now() + timeoutMs;
      while (opts.wait && (v.status === 'pending' || v.status === 'building')) {
        if (Date.now() > until) {
          throw new CliError(
            `Export ${v.id} is still being prepared; its link will be emailed.`,
            EXIT.failure,
            'timeout',
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 2000));
        v = await s.get<ExportView>(`/api/me/privacy/exports/${encodeURIComponent(v.id)}`);
      }
      return v;
    });
    emit(io, Boolean(globals().json), view, describeExport(view));
    if (view.status === 'failed') throw new CliError('The export could not be built.', EXIT.failure, 'export_failed');
  });

  privacy
    .command('download')
    .description('Download an export through the link emailed when it was ready (the link works once).')
    .argument('<link>', 'the download link from the email')
    .option('--output <file>', 'where to write the archive (default: berth-export-<id>.json; never overwritten)')
    .action(async (link: string, opts: { output?: string }) => {
      let url: URL;
      try {
        url = new URL(link);
      } catch {
        throw new CliError('Not a URL: pass the download link from the email.', EXIT.usage, 'invalid_url');
      }
      const m = /^\/api\/privacy\/exports\/([^/]+)\/download$/.exec(url.pathname);
      if (!m?.[1] || !url.searchParams.get('token')) {
        throw new CliError('Not an export download link.', EXIT.usage, 'invalid_url');
      }
      const file = opts.output ?? `berth-export-${m[1]}.json`;
      // Personal data: readable by its owner only, and never written over another file. The
      // file is claimed before the link is used, since the link works once.
      let fd: number;
      try {
        fd = openSync(file, 'wx', 0o600);
      } catch (err) {
        throw new CliError(`Cannot write ${file}: ${(err as Error).message}`, EXIT.usage, 'output_exists');
      }
      let answer: Awaited<ReturnType<typeof sendRequest>>;
      try {
        answer = await sendRequest(url.origin, `${url.pathname}${url.search}`, 'GET');
        if (answer.status !== 200) throw refusal(answer, 'The download');
        writeSync(fd, answer.body);
      } catch (err) {
        closeSync(fd);
        unlinkSync(file);
        throw err;
      }
      closeSync(fd);
      const result = { exportId: m[1], file, bytes: answer.body.length };
      emit(
        io,
        Boolean(globals().json),
        result,
        `Wrote ${file} (${answer.body.length} bytes). The link is used up now.`,
      );
    });
}

/**
 * `berth privacy delete`, as the signed-in user: signs in, then asks for the deletion with
 * the same password (re-authentication) and, with 2FA on, a second authenticator code (a
 * code works once: the one used to sign in cannot confirm the deletion). The account is
 * closed at once and erased after the grace period; the emailed link cancels until then.
 */
function registerDeletionCommand(privacy: Command, io: Io, globals: () => GlobalOptions) {
  type Opts = SignInOpts & { deletionCode?: string; yes?: boolean };
  withSignIn(
    privacy
      .command('delete')
      .description(
        'Delete your account (GDPR Art. 17): it is closed at once (sessions, API keys and 2FA end) and erased with your personal data after 30 days; the emailed link cancels until then.',
      )
      .option(
        '--deletion-code <code>',
        'with 2FA on: a newer authenticator code than the sign-in one (asked for otherwise)',
      )
      .option('--yes', 'confirm: without it nothing is done'),
  ).action(async (opts: Opts) => {
    if (!opts.yes) {
      throw new CliError(
        'Deleting your account cannot be undone after 30 days: add --yes to confirm.',
        EXIT.usage,
        'usage',
      );
    }
    const { url } = serverTarget({ ...(opts.url ? { url: opts.url } : {}) }, io.env);
    const email = opts.email ?? io.env.BERTH_EMAIL;
    if (!email) throw new CliError('--email (or BERTH_EMAIL): the account to delete.', EXIT.usage, 'usage');
    const json = { accept: 'application/json' };
    const password = await readSecret(io.stdin, io.err, 'Password: ');
    let answer = await sendRequest(url, '/api/auth/login', 'POST', { headers: json, body: { email, password } });
    const first = (jsonOf(answer) ?? {}) as { code?: string; challengeToken?: string };
    const mfa = answer.status === 401 && first.code === 'mfa_challenge_required';
    if (mfa) {
      const code = opts.code ?? (await readSecret(io.stdin, io.err, 'Authenticator code: '));
      answer = await sendRequest(url, '/api/auth/login/mfa', 'POST', {
        headers: json,
        body: { challengeToken: first.challengeToken, code: code.trim() },
      });
    }
    const cookie = answer.headers.get('set-cookie')?.split(';')[0];
    if (answer.status !== 200 || !cookie) throw refusal(answer, 'Sign-in');
    const csrf = String((jsonOf(answer) as { csrfToken?: string } | null)?.csrfToken ?? '');
    const code = mfa
      ? (opts.deletionCode ??
        (await readSecret(io.stdin, io.err, 'A new authenticator code (the next one), to confirm the deletion: ')))
      : undefined;
    const result = await sendRequest(url, '/api/me/deletion', 'POST', {
      headers: { ...json, cookie, 'x-csrf-token': csrf },
      body: { password, ...(code ? { code: code.trim() } : {}) },
    });
    if (result.status !== 202) {
      await sendRequest(url, '/api/auth/logout', 'POST', { headers: { ...json, cookie, 'x-csrf-token': csrf } }).catch(
        () => undefined,
      );
      throw refusal(result, 'The deletion');
    }
    const { deletion } = jsonOf(result) as { deletion: DeletionView };
    emit(
      io,
      Boolean(globals().json),
      deletion,
      `Your account is closed and will be erased on ${deletion.eraseAfter}. To cancel before then, open the link emailed to ${email}.`,
    );
  });
}

/** Registers every `berth privacy` subcommand. */
export function registerPrivacyCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const privacy = program
    .command('privacy')
    .description("Privacy rights over HTTP: your data's restriction, export and deletion; operators' requests.");
  registerRestrictionCommands(privacy, io, globals);
  registerRequestCommands(privacy, io, globals);
  registerExportCommands(privacy, io, globals);
  registerDeletionCommand(privacy, io, globals);
  // records (Art. 30) and breaches (Art. 33), for operators.
  registerPrivacyDocumentCommands(privacy, io, globals);
  // Other parts register their subcommands here (export, delete, records).
}
