import type { Command } from 'commander';
import { openRuntime, operatorModules } from '../main.ts';
import { generateKek } from '../modules/vault/index.ts';
import { createJobs } from '../platform/jobs/pgboss.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { cliLogger, emit, type Io } from './output.ts';

/** `berth vault generate-key` and `berth vault rotate`. */
export function registerVaultCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const vault = program.command('vault').description('Key-encryption keys and data keys.');
  vault
    .command('generate-key')
    .description('Print a new key-encryption key (KEK) for BERTH_KEK or BERTH_KEK_FILE.')
    .option('--kek-version <n>', 'version number of the new key', '1')
    .action((opts: { kekVersion: string }) => {
      const g = globals();
      const version = Number(opts.kekVersion);
      const key = generateKek(version);
      emit(io, Boolean(g.json), { version, key }, key);
    });
  vault
    .command('rotate')
    .description('Rewrap every data key under the newest configured KEK (see docs/operations/vault.md).')
    .action(async () => {
      const g = globals();
      const config = configFor(io, g);
      const runtime = await openRuntime(config, { purpose: 'vault rotate', logger: cliLogger(io, config) });
      const jobs = createJobs({ db: runtime.db, logger: runtime.logger, ownerUrl: config.DATABASE_URL });
      try {
        const result = await operatorModules(runtime, jobs).vault.service.rotateKek();
        emit(
          io,
          Boolean(g.json),
          result,
          `Rewrapped ${result.rewrapped} data key(s) under KEK version ${result.kekVersion}.`,
        );
      } finally {
        await runtime.close();
      }
    });
}
