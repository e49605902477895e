import type { Command } from 'commander';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { withModules } from './runtime.ts';

/** `berth mail outbox`: emails Berth would have sent, when no SMTP server is configured. */
export function registerMailCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const mail = program.command('mail').description('Outgoing email.');
  mail
    .command('outbox')
    .description('Print the newest emails in the outbox (used when SMTP_URL is not set).')
    .option('--limit <n>', 'how many messages', '20')
    .action(async (opts: { limit: string }) => {
      const g = globals();
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new CliError('--limit must be a whole number from 1 to 1000.', EXIT.usage, 'invalid_limit');
      }
      const config = configFor(io, g);
      const messages = await withModules(io, config, 'mail outbox', (modules) =>
        modules.notifications.service.listOutbox({ limit }),
      );
      const human = messages.length
        ? messages
            .map((m) => `--- ${m.createdAt} to ${m.to} [${m.tag}]\nSubject: ${m.subject}\n\n${m.text}`)
            .join('\n\n')
        : 'The outbox is empty.';
      emit(io, Boolean(g.json), { data: messages }, human);
    });
}
