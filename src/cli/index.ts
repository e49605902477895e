import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../app.ts';
import { type Config, loadConfig, type RawConfig } from '../config.ts';
import { registerAdminCommands } from './admin.commands.ts';
import { registerAgentsCommands } from './agents.commands.ts';
import { registerAuditCommands } from './audit.commands.ts';
import { registerBillingCommands } from './billing.commands.ts';
import { registerConnectionsCommands } from './connections.commands.ts';
import { registerGatewayCommands } from './gateway.commands.ts';
import { registerKbCommands, type TtyAwareIo } from './kb.commands.ts';
import { registerKeysCommands } from './keys.commands.ts';
import { registerMailCommands } from './mail.commands.ts';
import { registerOperatorCommands } from './operator.commands.ts';
import { describeError, EXIT, type Io } from './output.ts';
import { registerPrivacyCommands } from './privacy.commands.ts';
import { registerRetentionCommands } from './retention.commands.ts';
import { registerRunsCommands } from './runs.commands.ts';
import { registerServerCommands } from './server.commands.ts';
import { registerSubprocessorCommands } from './subprocessors.commands.ts';
import { registerVaultCommands } from './vault.commands.ts';

export type GlobalOptions = { config?: string; json?: boolean };

/** Loads configuration for a command: env, then the --config file, then command flags. */
export function configFor(io: Io, globals: GlobalOptions, overrides: RawConfig = {}): Config {
  const clean = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as RawConfig;
  return loadConfig({ env: io.env, file: globals.config ?? io.env.BERTH_CONFIG, overrides: clean });
}

export function buildProgram(io: Io) {
  const program = new Command('berth')
    .description('Berth: self-hostable platform for AI agents behind an OpenAI-compatible gateway.')
    .version(VERSION, '-v, --version')
    .addOption(new Option('-c, --config <file>', 'JSON file of settings (same names as the environment variables)'))
    .option('--json', 'print machine-readable JSON')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
  program.addHelpText(
    'after',
    `
Exit codes: 0 ok, 1 failure, 2 invalid usage or configuration, 3 embedded database in use,
4 refused (validation, conflict, permission), 5 server or database unreachable.
Every command accepts --json. Settings come from the environment (BERTH_*, DATABASE_URL,
REDIS_URL, SMTP_URL) and --config; see docs/operations/configuration.md.`,
  );
  const globals = () => program.opts<GlobalOptions>();
  registerServerCommands(program, io, globals);
  registerAdminCommands(program, io, globals);
  registerVaultCommands(program, io, globals);
  registerMailCommands(program, io, globals);
  registerKeysCommands(program, io, globals);
  registerConnectionsCommands(program, io, globals);
  registerAgentsCommands(program, io, globals);
  registerRunsCommands(program, io, globals);
  registerKbCommands(program, io, globals);
  registerAuditCommands(program, io, globals);
  registerGatewayCommands(program, io, globals);
  registerBillingCommands(program, io, globals);
  registerOperatorCommands(program, io, globals);
  registerPrivacyCommands(program, io, globals);
  registerSubprocessorCommands(program, io, globals);
  registerRetentionCommands(program, io, globals);
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function runCli(argv: string[], io: Io = defaultIo()): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        return EXIT.ok;
      }
      return EXIT.usage;
    }
    const { code, message, exitCode } = describeError(err);
    if (!message) return exitCode;
    if (program.opts<GlobalOptions>().json || argv.includes('--json')) {
      io.out(JSON.stringify({ error: { code, message } }, null, 2));
    } else {
      io.err(`berth: ${message}`);
    }
    return exitCode;
  }
}

function defaultIo(): TtyAwareIo {
  return {
    out: (s) => process.stdout.write(`${s}\n`),
    err: (s) => process.stderr.write(`${s}\n`),
    errIsTty: Boolean(process.stderr.isTTY),
    env: process.env,
    stdin: process.stdin,
  };
}
