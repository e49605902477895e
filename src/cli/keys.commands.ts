import type { Command } from 'commander';
import type { KeyView, KeyWithSecret } from '../modules/keys/index.ts';
import { callServer, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';

type HttpOpts = WorkspaceHttpOpts;

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90s`, `15m`, `24h`, `30d` or a plain number of seconds, in seconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new CliError(`${what}: use a duration like 90s, 15m, 24h or 30d.`, EXIT.usage, 'invalid_duration');
  return Number(m[1]) * (UNITS[m[2] || 's'] ?? 1);
}

/** An expiry: an ISO date-time, or a duration from now (`30d`). */
export function parseExpiry(text: string, now: Date): string {
  if (/^\d+[smhd]?$/.test(text.trim())) {
    return new Date(now.getTime() + parseDuration(text, '--expires') * 1000).toISOString();
  }
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) {
    throw new CliError('--expires: use an ISO date-time or a duration like 30d.', EXIT.usage, 'invalid_expiry');
  }
  return at.toISOString();
}

/** The server and the workspace's keys URL (see `workspaceOf`). */
async function keysOf(opts: HttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}/keys` };
}

function describeKey(k: KeyView): string {
  const used = k.lastUsedAt ? `used ${k.lastUsedAt}` : 'never used';
  const expires = k.expiresAt ? `expires ${k.expiresAt}` : 'no expiry';
  return `${k.id}  ${k.prefix}…${k.last4}  ${k.status.padEnd(7)}  ${k.name}  [${k.scopes.join(', ')}]  ${expires}, ${used}`;
}

function withHttp(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', 'API key with workspace:admin (BERTH_API_KEY)')
    .option('--workspace <id>', "the workspace (default: the API key's)");
}

/** `berth keys create|list|revoke|roll` over HTTP, authenticated by an API key. */
export function registerKeysCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const keys = program
    .command('keys')
    .description("API keys of a workspace, over HTTP (the workspace is the calling key's unless --workspace).");

  withHttp(
    keys
      .command('create')
      .description('Create an API key and print its secret (shown this once).')
      .requiredOption('--name <name>', 'a name for the key')
      .requiredOption('--scopes <list>', 'comma-separated scopes, e.g. gateway:invoke,models:read')
      .option('--expires <when>', 'ISO date-time or a duration from now (30d, 12h)'),
  ).action(async (opts: HttpOpts & { name: string; scopes: string; expires?: string }) => {
    const g = globals();
    const scopes = opts.scopes
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const expiresAt = opts.expires ? parseExpiry(opts.expires, new Date()) : undefined;
    const { target, base } = await keysOf(opts, io);
    const created = await callServer<KeyWithSecret>(target, 'POST', base, {
      name: opts.name,
      scopes,
      ...(expiresAt ? { expiresAt } : {}),
    });
    emit(
      io,
      Boolean(g.json),
      created,
      `${describeKey(created.key)}\n\nSecret (shown this once, store it now):\n${created.secret}`,
    );
  });

  withHttp(
    keys.command('list').description('List API keys (name, prefix and last 4, scopes, expiry, last use).'),
  ).action(async (opts: HttpOpts) => {
    const g = globals();
    const { target, base } = await keysOf(opts, io);
    const list = await callServer<{ data: KeyView[] }>(target, 'GET', base);
    emit(io, Boolean(g.json), list, list.data.length ? list.data.map(describeKey).join('\n') : 'No API keys.');
  });

  withHttp(keys.command('revoke').description('Revoke an API key (refused from the next request on).'))
    .argument('<id>', 'the key id (key_...)')
    .action(async (id: string, opts: HttpOpts) => {
      const g = globals();
      const { target, base } = await keysOf(opts, io);
      const key = await callServer<KeyView>(target, 'POST', `${base}/${encodeURIComponent(id)}/revoke`);
      emit(io, Boolean(g.json), key, `Revoked ${key.id} (${key.name}).`);
    });

  withHttp(
    keys
      .command('roll')
      .description('Give a key a new secret; the old one keeps working for the grace period.')
      .option('--grace <duration>', 'how long the old secret keeps working (0 = stops now; at most 30d)', '24h'),
  )
    .argument('<id>', 'the key id (key_...)')
    .action(async (id: string, opts: HttpOpts & { grace: string }) => {
      const g = globals();
      const gracePeriodSeconds = parseDuration(opts.grace, '--grace');
      const { target, base } = await keysOf(opts, io);
      const rolled = await callServer<KeyWithSecret>(target, 'POST', `${base}/${encodeURIComponent(id)}/roll`, {
        gracePeriodSeconds,
      });
      const old = rolled.key.secrets.slice(1).map((s) => `${s.prefix}…${s.last4} until ${s.expiresAt ?? '?'}`);
      emit(
        io,
        Boolean(g.json),
        rolled,
        [
          describeKey(rolled.key),
          old.length ? `Previous secret(s) still working: ${old.join(', ')}` : 'The previous secret stopped working.',
          '',
          'New secret (shown this once, store it now):',
          rolled.secret,
        ].join('\n'),
      );
    });
}
