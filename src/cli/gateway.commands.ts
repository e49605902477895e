import { readFile } from 'node:fs/promises';
import { type Command, Option } from 'commander';
import type {
  ModelView,
  PriceView,
  ProviderView,
  UsageAggregateView,
  UsageEventView,
} from '../modules/gateway/index.ts';
import { microsToUsd } from '../platform/money.ts';
import { callServer, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { parseDuration } from './keys.commands.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';

type HttpOpts = WorkspaceHttpOpts;

// The shapes the gateway's /api routes answer (see gateway.schemas.ts on the server).
type Adapter = ProviderView['adapter'];
type UsageEvent = UsageEventView;
type UsageAggregate = UsageAggregateView;
type Page<T> = { data: T[]; nextCursor: string | null };

const ADAPTERS: Adapter[] = ['openai-compatible', 'anthropic'];
const GROUPS = ['day', 'model', 'key', 'provider'] as const;
const MICROS_PER_USD = 1_000_000n;
/** The API's ceiling for a price, in micro-units per million tokens (1,000,000 USD). */
const MAX_PRICE_MICROS = 1_000_000_000_000n;

/**
 * A decimal number of US dollars as integer micro-units, exactly (no float on the way):
 * `"0.15"` -> 150000. More than 6 decimals, a sign or anything else is a usage error.
 */
export function usdToMicros(text: string, flag: string): number {
  const t = text.trim();
  if (t.startsWith('-'))
    throw new CliError(`${flag}: a price cannot be negative (got ${t}).`, EXIT.usage, 'invalid_price');
  const m = /^(\d*)(?:\.(\d*))?$/.exec(t);
  const whole = m?.[1] ?? '';
  const frac = m?.[2] ?? '';
  if (!m || (whole === '' && frac === '')) {
    throw new CliError(
      `${flag}: use a decimal number of US dollars, e.g. 0.15 (got ${t}).`,
      EXIT.usage,
      'invalid_price',
    );
  }
  if (frac.length > 6) {
    throw new CliError(
      `${flag}: at most 6 decimal places (one micro-dollar) are allowed (got ${t}).`,
      EXIT.usage,
      'invalid_price',
    );
  }
  const micros = BigInt(whole || '0') * MICROS_PER_USD + BigInt(frac.padEnd(6, '0'));
  if (micros > MAX_PRICE_MICROS) {
    throw new CliError(`${flag}: at most 1000000 USD per million tokens (got ${t}).`, EXIT.usage, 'invalid_price');
  }
  return Number(micros);
}

/**
 * A point in time for `--since`/`--until`: an ISO date(-time), or a duration before now
 * (`7d`, `24h`, `30m`), as an ISO date-time.
 */
export function parseInstant(text: string, flag: string, now: Date): string {
  const t = text.trim();
  if (/^\d+[smhd]$/.test(t)) return new Date(now.getTime() - parseDuration(t, flag) * 1000).toISOString();
  const at = /^\d{4}-\d{2}-\d{2}/.test(t) ? new Date(t) : new Date(Number.NaN);
  if (Number.isNaN(at.getTime())) {
    throw new CliError(
      `${flag}: use an ISO date-time or a duration before now like 7d or 24h.`,
      EXIT.usage,
      'invalid_time',
    );
  }
  return at.toISOString();
}

export function parsePositiveInt(text: string, flag: string): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new CliError(`${flag}: use a positive whole number (got ${text}).`, EXIT.usage, 'invalid_number');
  }
  return n;
}

/** `?limit=&cursor=` of a paginated list command (empty when neither is given). */
export function pageQuery(opts: { limit?: string | undefined; cursor?: string | undefined }): string {
  const query = new URLSearchParams();
  if (opts.limit) query.set('limit', String(parsePositiveInt(opts.limit, '--limit')));
  if (opts.cursor) query.set('cursor', opts.cursor);
  return query.toString() ? `?${query}` : '';
}

export function splitList(text: string, flag: string): string[] {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new CliError(`${flag}: give at least one name.`, EXIT.usage, 'invalid_list');
  return items;
}

/** Left-aligned text columns, right-aligned where `right[i]`; two spaces between columns. */
function table(headers: string[], rows: string[][], right: boolean[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** The upstream credential from exactly one place, so it never has to be on the command line. */
export async function providerApiKey(
  opts: { providerApiKey?: string; providerApiKeyFile?: string },
  env: Record<string, string | undefined>,
): Promise<string | undefined> {
  if (opts.providerApiKey !== undefined && opts.providerApiKeyFile !== undefined) {
    throw new CliError(
      'Pass the provider key with --provider-api-key or --provider-api-key-file, not both.',
      EXIT.usage,
      'invalid_usage',
    );
  }
  let key = opts.providerApiKey ?? env.BERTH_PROVIDER_API_KEY;
  if (opts.providerApiKeyFile !== undefined) {
    try {
      key = (await readFile(opts.providerApiKeyFile, 'utf8')).replace(/[\r\n]+$/, '');
    } catch {
      throw new CliError(`Cannot read ${opts.providerApiKeyFile}.`, EXIT.usage, 'unreadable_file');
    }
    if (!key) throw new CliError(`${opts.providerApiKeyFile} is empty.`, EXIT.usage, 'invalid_usage');
  }
  return key || undefined;
}

function withHttp(cmd: Command, needs: string): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', `Berth API key with ${needs} (BERTH_API_KEY)`)
    .option('--workspace <id>', "the workspace (default: the API key's)");
}

/** The server and the workspace's base path (see `workspaceOf`). */
async function workspaceBase(opts: HttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}` };
}

export function modelsSummary(models: string[]): string {
  if (models.length === 0) return 'no models';
  const shown = models.slice(0, 5).join(', ');
  return models.length > 5 ? `${shown} (+${models.length - 5} more)` : shown;
}

const usd = (micros: number | null | undefined) =>
  micros === null || micros === undefined ? '-' : microsToUsd(micros);

function describePrice(p: PriceView): string {
  const cached = p.cachedInputMicrosPerMtok === null ? '' : `, cached input ${usd(p.cachedInputMicrosPerMtok)}`;
  const context = p.contextWindow === null ? '' : `; context window ${p.contextWindow} tokens`;
  return `Price of ${p.model} (USD per million tokens): input ${usd(p.inputMicrosPerMtok)}, output ${usd(p.outputMicrosPerMtok)}${cached}${context}.`;
}

/** `berth providers add|list|remove` over HTTP. */
function registerProviders(program: Command, io: Io, globals: () => GlobalOptions) {
  const providers = program
    .command('providers')
    .description("Model providers of a workspace, over HTTP (the workspace is the calling key's unless --workspace).");

  type AddOpts = HttpOpts & {
    name: string;
    adapter: Adapter;
    baseUrl: string;
    providerApiKey?: string;
    providerApiKeyFile?: string;
    models?: string;
    timeoutMs?: string;
  };
  withHttp(
    providers
      .command('add')
      .description(
        "Connect a model provider. Its API key is stored encrypted and never shown again; without --models Berth asks the provider's GET /models.",
      )
      .requiredOption(
        '--name <name>',
        'unique in the workspace (lower-case letters, digits, - and _); callers may ask for name/model',
      )
      .addOption(new Option('--adapter <kind>', 'the API it speaks').choices(ADAPTERS).makeOptionMandatory())
      .requiredOption('--base-url <url>', 'e.g. https://api.openai.com/v1')
      .option(
        '--provider-api-key <key>',
        "the provider's API key (or BERTH_PROVIDER_API_KEY, or --provider-api-key-file)",
      )
      .option('--provider-api-key-file <path>', "read the provider's API key from this file")
      .option('--models <list>', 'comma-separated models it serves (default: ask the provider)')
      .option('--timeout-ms <ms>', 'per-attempt timeout in milliseconds (default 60000)'),
    'providers:manage',
  ).action(async (opts: AddOpts) => {
    const g = globals();
    const models = opts.models === undefined ? undefined : splitList(opts.models, '--models');
    const timeoutMs = opts.timeoutMs === undefined ? undefined : parsePositiveInt(opts.timeoutMs, '--timeout-ms');
    const apiKey = await providerApiKey(opts, io.env);
    const { target, base } = await workspaceBase(opts, io);
    const added = await callServer<ProviderView>(target, 'POST', `${base}/providers`, {
      name: opts.name,
      adapter: opts.adapter,
      baseUrl: opts.baseUrl,
      ...(apiKey ? { apiKey } : {}),
      ...(models ? { models } : {}),
      ...(timeoutMs ? { timeoutMs } : {}),
    });
    emit(
      io,
      Boolean(g.json),
      added,
      `Added provider ${added.name} (${added.id}): ${added.adapter} at ${added.baseUrl}, ${added.models.length} model(s): ${modelsSummary(added.models)}; ${added.hasCredentials ? 'credentials stored encrypted' : 'no credentials'}.`,
    );
  });

  withHttp(
    providers.command('list').description('List providers (credentials are never shown).'),
    'providers:read',
  ).action(async (opts: HttpOpts) => {
    const g = globals();
    const { target, base } = await workspaceBase(opts, io);
    const list = await callServer<Page<ProviderView>>(target, 'GET', `${base}/providers`);
    const rows = list.data.map((p) => [
      p.id,
      p.name,
      p.adapter,
      p.baseUrl,
      p.hasCredentials ? 'yes' : 'no',
      modelsSummary(p.models),
    ]);
    emit(
      io,
      Boolean(g.json),
      list,
      rows.length ? table(['ID', 'NAME', 'ADAPTER', 'BASE URL', 'KEY', 'MODELS'], rows) : 'No providers.',
    );
  });

  withHttp(providers.command('remove').description('Remove a provider and its stored credentials.'), 'providers:manage')
    .argument('<name-or-id>', 'the provider name, or its id (prv_...)')
    .action(async (nameOrId: string, opts: HttpOpts) => {
      const g = globals();
      const { target, base } = await workspaceBase(opts, io);
      const list = await callServer<Page<ProviderView>>(target, 'GET', `${base}/providers`);
      const found = list.data.find((p) => p.id === nameOrId) ?? list.data.find((p) => p.name === nameOrId);
      if (!found) {
        throw new CliError(
          `No provider named ${nameOrId} (or with that id) in this workspace; berth providers list shows them.`,
          EXIT.refused,
          'not_found',
        );
      }
      await callServer<null>(target, 'DELETE', `${base}/providers/${encodeURIComponent(found.id)}`);
      emit(
        io,
        Boolean(g.json),
        { removed: true, id: found.id, name: found.name },
        `Removed provider ${found.name} (${found.id}) and its credentials.`,
      );
    });
}

/** `berth models list|price` over HTTP. */
function registerModels(program: Command, io: Io, globals: () => GlobalOptions) {
  const models = program
    .command('models')
    .description('Models the workspace can call and their prices, over HTTP (prices in USD per million tokens).');

  withHttp(
    models.command('list').description('List models with their provider and price (USD per million tokens).'),
    'providers:read',
  ).action(async (opts: HttpOpts) => {
    const g = globals();
    const { target, base } = await workspaceBase(opts, io);
    const list = await callServer<{ data: ModelView[]; catalogVersion: string }>(target, 'GET', `${base}/models`);
    const rows = list.data.map((m) => [
      m.id,
      m.provider,
      usd(m.price?.inputMicrosPerMtok),
      usd(m.price?.outputMicrosPerMtok),
      usd(m.price?.cachedInputMicrosPerMtok),
      m.price?.contextWindow ? String(m.price.contextWindow) : '-',
    ]);
    const human = rows.length
      ? `${table(['MODEL', 'PROVIDER', 'INPUT', 'OUTPUT', 'CACHED INPUT', 'CONTEXT'], rows, [false, false, true, true, true, true])}\n\nPrices in USD per million tokens ('-': no price; catalog ${list.catalogVersion}).`
      : 'No models: connect a provider with berth providers add.';
    emit(io, Boolean(g.json), list, human);
  });

  type PriceOpts = HttpOpts & {
    inputUsdPerMtok: string;
    outputUsdPerMtok: string;
    cachedInputUsdPerMtok?: string;
    contextWindow?: string;
  };
  withHttp(
    models
      .command('price')
      .description("Set the workspace's price for a model (overrides the catalog); '*' prices every unpriced model.")
      .requiredOption('--input-usd-per-mtok <usd>', 'USD per million prompt tokens, e.g. 0.15 (at most 6 decimals)')
      .requiredOption('--output-usd-per-mtok <usd>', 'USD per million completion tokens')
      .option('--cached-input-usd-per-mtok <usd>', 'USD per million prompt tokens served from cache')
      .option('--context-window <tokens>', "the model's context window in tokens"),
    'providers:manage',
  )
    .argument('<model>', "the model id, or '*'")
    .action(async (model: string, opts: PriceOpts) => {
      const g = globals();
      const body = {
        model,
        inputMicrosPerMtok: usdToMicros(opts.inputUsdPerMtok, '--input-usd-per-mtok'),
        outputMicrosPerMtok: usdToMicros(opts.outputUsdPerMtok, '--output-usd-per-mtok'),
        ...(opts.cachedInputUsdPerMtok === undefined
          ? {}
          : { cachedInputMicrosPerMtok: usdToMicros(opts.cachedInputUsdPerMtok, '--cached-input-usd-per-mtok') }),
        ...(opts.contextWindow === undefined
          ? {}
          : { contextWindow: parsePositiveInt(opts.contextWindow, '--context-window') }),
      };
      const { target, base } = await workspaceBase(opts, io);
      const price = await callServer<PriceView>(target, 'PUT', `${base}/model-prices`, body);
      emit(io, Boolean(g.json), price, describePrice(price));
    });
}

function eventsTable(events: UsageEvent[]): string {
  const rows = events.map((e) => [
    e.createdAt,
    e.model,
    e.provider ?? '-',
    e.errorCode ? `${e.status} ${e.errorCode}` : String(e.status),
    String(e.inputTokens),
    String(e.outputTokens),
    String(e.latencyMs),
    `${e.estimated ? '~' : ''}${microsToUsd(e.costMicros)}`,
    e.keyId ?? '-',
  ]);
  return table(['TIME', 'MODEL', 'PROVIDER', 'STATUS', 'IN', 'OUT', 'MS', 'COST USD', 'KEY'], rows, [
    false,
    false,
    false,
    false,
    true,
    true,
    true,
    true,
    false,
  ]);
}

function aggregatesTable(groupBy: string, rows: UsageAggregate[]): string {
  const sum = (f: (r: UsageAggregate) => number) => rows.reduce((n, r) => n + f(r), 0);
  const cells = (label: string, r: Omit<UsageAggregate, 'group' | 'reasoningTokens'>) => [
    label,
    String(r.requests),
    String(r.errors),
    String(r.inputTokens),
    String(r.outputTokens),
    String(r.cachedTokens),
    microsToUsd(r.costMicros),
  ];
  const total = cells('TOTAL', {
    requests: sum((r) => r.requests),
    errors: sum((r) => r.errors),
    inputTokens: sum((r) => r.inputTokens),
    outputTokens: sum((r) => r.outputTokens),
    cachedTokens: sum((r) => r.cachedTokens),
    costMicros: sum((r) => r.costMicros),
  });
  return table(
    [groupBy.toUpperCase(), 'REQUESTS', 'ERRORS', 'INPUT TOKENS', 'OUTPUT TOKENS', 'CACHED', 'COST USD'],
    [...rows.map((r) => cells(r.group, r)), total],
    [false, true, true, true, true, true, true],
  );
}

/** `berth usage` over HTTP: events, or aggregates with --group-by. */
function registerUsage(program: Command, io: Io, globals: () => GlobalOptions) {
  type UsageOpts = HttpOpts & {
    since?: string;
    until?: string;
    groupBy?: (typeof GROUPS)[number];
    limit?: string;
    cursor?: string;
    model?: string;
    key?: string;
  };
  withHttp(
    program
      .command('usage')
      .description(
        'Gateway usage of the workspace: the events, newest first, or totals per day, model, key or provider (costs in USD).',
      )
      .option('--since <when>', 'ISO date-time, or a duration before now like 7d or 24h (default 30d)')
      .option('--until <when>', 'ISO date-time, or a duration before now (default now)')
      .addOption(new Option('--group-by <group>', 'totals per group instead of events').choices(GROUPS))
      .option('--limit <n>', 'how many events (1-1000, default 100)')
      .option('--cursor <id>', 'the next page of events (the nextCursor of the previous page)')
      .option('--model <model>', 'only events of this model')
      .option('--key <id>', 'only events of this API key'),
    'usage:read',
  ).action(async (opts: UsageOpts) => {
    const g = globals();
    if (opts.groupBy) {
      const eventsOnly = [
        opts.limit && '--limit',
        opts.cursor && '--cursor',
        opts.model && '--model',
        opts.key && '--key',
      ]
        .filter(Boolean)
        .join(', ');
      if (eventsOnly) {
        throw new CliError(`${eventsOnly}: only for events, not with --group-by.`, EXIT.usage, 'invalid_usage');
      }
    }
    const now = new Date();
    const query = new URLSearchParams();
    if (opts.since) query.set('since', parseInstant(opts.since, '--since', now));
    if (opts.until) query.set('until', parseInstant(opts.until, '--until', now));
    if (opts.groupBy) query.set('groupBy', opts.groupBy);
    if (opts.limit) query.set('limit', String(parsePositiveInt(opts.limit, '--limit')));
    if (opts.cursor) query.set('cursor', opts.cursor);
    if (opts.model) query.set('model', opts.model);
    if (opts.key) query.set('keyId', opts.key);
    const { target, base } = await workspaceBase(opts, io);
    const qs = query.toString() ? `?${query}` : '';
    if (opts.groupBy) {
      const page = await callServer<Page<UsageAggregate>>(target, 'GET', `${base}/usage${qs}`);
      emit(io, Boolean(g.json), page, page.data.length ? aggregatesTable(opts.groupBy, page.data) : 'No usage.');
      return;
    }
    const page = await callServer<Page<UsageEvent>>(target, 'GET', `${base}/usage${qs}`);
    const more = page.nextCursor ? `\n\nMore: add --cursor ${page.nextCursor}` : '';
    emit(io, Boolean(g.json), page, page.data.length ? `${eventsTable(page.data)}${more}` : 'No usage.');
  });
}

/** `berth providers`, `berth models` and `berth usage`: the gateway of a workspace, over HTTP. */
export function registerGatewayCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  registerProviders(program, io, globals);
  registerModels(program, io, globals);
  registerUsage(program, io, globals);
}
