import type { Command } from 'commander';
import type { AuditEventView, VerifyReport } from '../modules/audit/index.ts';
import { callServer, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { CliError, emit, type Io } from './output.ts';
import { withModules } from './runtime.ts';

/** `berth audit verify` exits with this when any chain is broken (documented in docs/api/audit.md). */
export const EXIT_AUDIT_BROKEN = 6;

type HttpOpts = WorkspaceHttpOpts;

function describeReport(r: VerifyReport): string {
  const where = r.chain === 'platform' ? 'platform chain' : `workspace ${r.chain}`;
  if (r.ok) {
    const cps = r.checkpoints.signaturesChecked
      ? `${r.checkpoints.checked} signed checkpoint(s) verified`
      : `${r.checkpoints.checked} checkpoint(s) not checked (no signing key configured here)`;
    return `ok      ${where}: ${r.checked} event(s) from seq ${r.anchor.seq}, head ${r.head.seq}; ${cps}`;
  }
  return `BROKEN  ${where}: first broken seq ${r.firstBrokenSeq} (${r.reason}). ${r.message}`;
}

/** Prints the reports and fails with exit code 6 when any chain is broken (after the output). */
function finish(io: Io, json: boolean, reports: VerifyReport[]) {
  emit(io, json, { ok: reports.every((r) => r.ok), chains: reports }, reports.map(describeReport).join('\n'));
  if (!reports.every((r) => r.ok)) {
    if (!json) io.err('berth: the audit log does not verify: it was changed outside Berth.');
    throw new CliError('', EXIT_AUDIT_BROKEN, 'audit_broken');
  }
}

/** `berth audit list` (over HTTP) and `berth audit verify` (offline on the database, or over HTTP). */
export function registerAuditCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const audit = program.command('audit').description('The tamper-evident audit log.');

  audit
    .command('list')
    .description("List a workspace's audit events, newest first (over HTTP with an API key).")
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', 'API key (BERTH_API_KEY)')
    .option('--workspace <id>', "the workspace (default: the API key's)")
    .option('--action <action>', 'only this action, or a prefix such as member.*')
    .option('--actor <id>', 'only events of this user or API key')
    .option('--limit <n>', 'how many (1-200)', '50')
    .action(async (opts: HttpOpts & { action?: string; actor?: string; limit: string }) => {
      const g = globals();
      const { target, workspaceId: ws } = await workspaceOf(opts, io.env);
      const query = new URLSearchParams({ limit: opts.limit });
      if (opts.action) query.set('action', opts.action);
      if (opts.actor) query.set('actor', opts.actor);
      const page = await callServer<{ data: AuditEventView[]; nextCursor: string | null }>(
        target,
        'GET',
        `/api/workspaces/${encodeURIComponent(ws)}/audit?${query}`,
      );
      const lines = page.data.map(
        (e) =>
          `${String(e.seq).padStart(6)}  ${e.occurredAt}  ${e.actor.type}:${e.actor.id}  ${e.action}  ${e.target.type}:${e.target.id}`,
      );
      emit(io, Boolean(g.json), page, lines.length ? lines.join('\n') : 'No audit events.');
    });

  audit
    .command('verify')
    .description(
      'Recompute the audit hash chains and check their signed checkpoints; exit code 0 only when every chain verifies (6 otherwise).',
    )
    .option('--workspace <id>', 'only this workspace (default: every chain, the platform one included)')
    .option('--url <url>', 'verify through a running server instead of the database (needs --workspace or --api-key)')
    .option('--api-key <key>', 'API key for --url (BERTH_API_KEY)')
    .action(async (opts: HttpOpts) => {
      const g = globals();
      if (opts.url) {
        const { target, workspaceId: ws } = await workspaceOf(opts, io.env);
        const report = await callServer<VerifyReport>(
          target,
          'GET',
          `/api/workspaces/${encodeURIComponent(ws)}/audit/verify`,
        );
        finish(io, Boolean(g.json), [report]);
        return;
      }
      const config = configFor(io, g);
      const reports = await withModules(io, config, 'audit verify', async (modules) =>
        opts.workspace ? [await modules.audit.service.verify(opts.workspace)] : modules.audit.service.verifyAll(),
      );
      finish(io, Boolean(g.json), reports);
    });
}
