import type { Command } from 'commander';
import { addKekVersion, generateKek, keyringFilePath, removeKekVersion } from '../modules/vault/index.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { withModules } from './runtime.ts';

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
      if (!Number.isInteger(version) || version < 1) {
        throw new CliError(
          `--kek-version must be a whole number from 1: ${opts.kekVersion}`,
          EXIT.usage,
          'invalid_version',
        );
      }
      const key = generateKek(version);
      emit(io, Boolean(g.json), { version, key }, key);
    });
  vault
    .command('rotate')
    .description('Rewrap every data key under the newest configured KEK (see docs/operations/vault.md).')
    .action(async () => {
      const g = globals();
      const config = configFor(io, g);
      const result = await withModules(io, config, 'vault rotate', (modules) => modules.vault.service.rotateKek());
      emit(
        io,
        Boolean(g.json),
        result,
        `Rewrapped ${result.rewrapped} data key(s) under KEK version ${result.kekVersion}.`,
      );
    });

  vault
    .command('status')
    .description('Show the current KEK version and how many data keys each version wraps.')
    .action(async () => {
      const g = globals();
      const config = configFor(io, g);
      const status = await withModules(io, config, 'vault status', (modules) => modules.vault.service.status());
      const lines = [
        `Current KEK version: ${status.kekVersion} (keyring holds ${status.keyringVersions.join(', ')})`,
        ...status.keys.map((k) => `  v${k.kekVersion}: ${k.live} live data key(s), ${k.destroyed} destroyed`),
      ];
      emit(io, Boolean(g.json), status, lines.join('\n'));
    });
  vault
    .command('add-key')
    .description('Append a new KEK version to the keyring file (the data-dir key or BERTH_KEK_FILE).')
    .action(() => {
      const g = globals();
      const file = keyringFileOrFail(configFor(io, g));
      const { version } = addKekVersion(file);
      emit(
        io,
        Boolean(g.json),
        { version, file },
        `Added KEK version ${version} to ${file}. Restart Berth, then run: berth vault rotate`,
      );
    });
  vault
    .command('remove-key <version>')
    .description('Remove an old KEK version from the keyring file, once no data key uses it (see vault status).')
    .action((version: string) => {
      const g = globals();
      const file = keyringFileOrFail(configFor(io, g));
      const v = Number(version);
      if (!Number.isInteger(v) || v < 1)
        throw new CliError(`Not a KEK version: ${version}`, EXIT.usage, 'invalid_version');
      const { removed } = removeKekVersion(file, v);
      emit(
        io,
        Boolean(g.json),
        { version: v, removed, file },
        removed ? `Removed KEK version ${v} from ${file}.` : `Version ${v} was not in ${file}.`,
      );
    });
}

function keyringFileOrFail(config: Parameters<typeof keyringFilePath>[0]): string {
  const file = keyringFilePath(config);
  if (!file) {
    throw new CliError(
      'The keyring comes from BERTH_KEK: edit that setting instead (see docs/operations/vault.md).',
      EXIT.usage,
      'kek_in_env',
    );
  }
  return file;
}
