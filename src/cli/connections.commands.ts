import type { Command } from 'commander';
import type { ConnectionView } from '../modules/vault/index.ts';
import { callServer, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { emit, type Io } from './output.ts';

type HttpOpts = WorkspaceHttpOpts;

async function connectionsOf(opts: HttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}/connections` };
}

function describeConnection(c: ConnectionView): string {
  const whose = c.mine ? 'yours' : `of ${c.userId}`;
  const sharing = c.shared ? 'shared' : 'personal';
  return `${c.id}  ${c.provider.padEnd(16)}  ${c.status.padEnd(6)}  ${sharing.padEnd(8)}  ${whose}  [${c.scopes.join(' ')}]`;
}

function withHttp(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', 'API key (BERTH_API_KEY): agents:read to list, workspace:admin to disconnect')
    .option('--workspace <id>', "the workspace (default: the API key's)");
}

/** `berth connections list|disconnect` over HTTP: the OAuth connections of the key's member. */
export function registerConnectionsCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const connections = program
    .command('connections')
    .description(
      "OAuth connections to third-party services, over HTTP: the calling key's member's own and the workspace's shared ones.",
    );

  withHttp(
    connections
      .command('list')
      .description('List connections (provider, status, shared or personal, scopes); never tokens.'),
  ).action(async (opts: HttpOpts) => {
    const g = globals();
    const { target, base } = await connectionsOf(opts, io);
    const list = await callServer<{ data: ConnectionView[] }>(target, 'GET', base);
    emit(
      io,
      Boolean(g.json),
      list,
      list.data.length ? list.data.map(describeConnection).join('\n') : 'No connections.',
    );
  });

  withHttp(
    connections
      .command('disconnect')
      .description('Disconnect: revoke the tokens at the provider (when it can) and delete them from Berth.'),
  )
    .argument('<id>', 'the connection id (con_...)')
    .action(async (id: string, opts: HttpOpts) => {
      const g = globals();
      const { target, base } = await connectionsOf(opts, io);
      const done = await callServer<{ revoked: boolean }>(target, 'DELETE', `${base}/${encodeURIComponent(id)}`);
      emit(
        io,
        Boolean(g.json),
        { id, ...done },
        done.revoked
          ? `Disconnected ${id}: the provider revoked its tokens and Berth deleted them.`
          : `Disconnected ${id}: Berth deleted its tokens (the provider did not confirm a revocation).`,
      );
    });
}
