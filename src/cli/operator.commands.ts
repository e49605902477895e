import { type Command, Option } from 'commander';
import type { AddProviderInput } from '../modules/gateway/index.ts';
import { registerOperatorBillingCommands } from './billing.commands.ts';
import { modelsSummary, parsePositiveInt, providerApiKey, splitList } from './gateway.commands.ts';
import type { GlobalOptions } from './index.ts';
import { configFor } from './index.ts';
import { emit, type Io } from './output.ts';
import { withModules } from './runtime.ts';

const actor = { type: 'system', name: 'cli' } as const;

/**
 * `berth operator providers add|list|remove`: providers every workspace may use, with the
 * operator's credentials. Works on the database directly (like `admin create`); running
 * replicas pick changes up within a minute (their cache's lifetime).
 */
export function registerOperatorCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const operator = program.command('operator').description('Platform-wide settings (works on the database directly).');
  registerOperatorBillingCommands(operator, io, globals);
  const providers = operator
    .command('providers')
    .description("Providers every workspace may use, with the operator's credentials (after a workspace's own).");

  type AddOpts = {
    name: string;
    adapter: AddProviderInput['adapter'];
    baseUrl: string;
    providerApiKey?: string;
    providerApiKeyFile?: string;
    models?: string;
    timeoutMs?: string;
  };
  providers
    .command('add')
    .description('Connect a platform provider; its API key is stored encrypted and never shown again.')
    .requiredOption('--name <name>', 'unique among platform providers')
    .addOption(
      new Option('--adapter <kind>', 'the API it speaks')
        .choices(['openai-compatible', 'anthropic'])
        .makeOptionMandatory(),
    )
    .requiredOption('--base-url <url>', 'e.g. https://api.openai.com/v1')
    .option(
      '--provider-api-key <key>',
      "the provider's API key (or BERTH_PROVIDER_API_KEY, or --provider-api-key-file)",
    )
    .option('--provider-api-key-file <path>', "read the provider's API key from this file")
    .option('--models <list>', 'comma-separated models it serves (default: ask the provider)')
    .option('--timeout-ms <ms>', 'per-attempt timeout in milliseconds (default 60000)')
    .action(async (opts: AddOpts) => {
      const g = globals();
      const config = configFor(io, g);
      const apiKey = await providerApiKey(opts, io.env);
      const input: AddProviderInput = {
        name: opts.name,
        adapter: opts.adapter,
        baseUrl: opts.baseUrl,
        ...(apiKey ? { apiKey } : {}),
        ...(opts.models === undefined ? {} : { models: splitList(opts.models, '--models') }),
        ...(opts.timeoutMs === undefined ? {} : { timeoutMs: parsePositiveInt(opts.timeoutMs, '--timeout-ms') }),
      };
      const added = await withModules(io, config, 'operator providers add', (m) =>
        m.gateway.service.providers.addPlatformProvider({ actor, input }),
      );
      emit(
        io,
        Boolean(g.json),
        added,
        `Added platform provider ${added.name} (${added.id}): ${added.adapter} at ${added.baseUrl}, ${added.models.length} model(s): ${modelsSummary(added.models)}.`,
      );
    });

  providers
    .command('list')
    .description('List platform providers (credentials are never shown).')
    .action(async () => {
      const g = globals();
      const list = await withModules(io, configFor(io, g), 'operator providers list', (m) =>
        m.gateway.service.providers.listPlatformProviders(),
      );
      const lines = list.map((p) => `${p.name}\t${p.id}\t${p.adapter}\t${p.baseUrl}\t${modelsSummary(p.models)}`);
      emit(io, Boolean(g.json), { data: list }, lines.length ? lines.join('\n') : 'No platform providers.');
    });

  providers
    .command('remove')
    .description('Remove a platform provider and its credentials.')
    .argument('<provider>', 'its name or id')
    .action(async (provider: string) => {
      const g = globals();
      await withModules(io, configFor(io, g), 'operator providers remove', (m) =>
        m.gateway.service.providers.removePlatformProvider({ actor, provider }),
      );
      emit(io, Boolean(g.json), { removed: provider }, `Removed platform provider ${provider}.`);
    });
}
