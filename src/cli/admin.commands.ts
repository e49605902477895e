import type { Command } from 'commander';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { readSecret } from './prompt.ts';
import { withModules } from './runtime.ts';

/** `berth admin create`: the first platform operator and their workspace. */
export function registerAdminCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const admin = program.command('admin').description('Platform operators (works on the database directly).');
  admin
    .command('create')
    .description('Create a platform operator and their first workspace.')
    .requiredOption('--email <email>', "the operator's email address")
    .option('--password <password>', 'password (omit to be prompted, or pipe it on stdin)')
    .requiredOption('--workspace <name>', "name of the operator's first workspace")
    .option('--display-name <name>', 'display name')
    .action(async (opts: { email: string; password?: string; workspace: string; displayName?: string }) => {
      const g = globals();
      const config = configFor(io, g);
      const password = opts.password ?? (await readSecret(io.stdin, io.err, 'Password: '));
      if (!password)
        throw new CliError('A password is required (--password, prompt or stdin).', EXIT.usage, 'password_required');
      const result = await withModules(io, config, 'admin create', (modules) =>
        modules.setup.service.createFirstAdmin({
          email: opts.email,
          password,
          workspaceName: opts.workspace,
          displayName: opts.displayName,
        }),
      );
      emit(
        io,
        Boolean(g.json),
        result,
        [
          `Created operator ${result.email} (${result.userId}) with workspace "${result.workspaceName}" (${result.workspaceId}).`,
          '',
          'API key with every scope for this workspace (shown this once, store it now):',
          result.apiKey,
        ].join('\n'),
      );
    });
}
