import { bigint, boolean, integer, jsonb, pgTable, primaryKey, text, unique } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

/** A model provider a workspace connected with its own credentials (see migrations/0011_gateway.sql). */
export const gatewayProviders = pgTable(
  'gateway_providers',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id').notNull(),
    name: text('name').notNull(),
    adapter: text('adapter', { enum: ['openai-compatible', 'anthropic'] }).notNull(),
    baseUrl: text('base_url').notNull(),
    credentialsCiphertext: bytea('credentials_ciphertext'),
    models: text('models').array().notNull(),
    timeoutMs: integer('timeout_ms').notNull(),
    createdBy: text('created_by'),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [unique().on(t.workspaceId, t.name)],
);

/** A provider the operator connects for every workspace (see migrations/0012_platform_providers.sql). */
export const platformProviders = pgTable('platform_providers', {
  id: text('id').primaryKey(),
  name: text('name').notNull().unique(),
  adapter: text('adapter', { enum: ['openai-compatible', 'anthropic'] }).notNull(),
  baseUrl: text('base_url').notNull(),
  credentialsCiphertext: bytea('credentials_ciphertext'),
  models: text('models').array().notNull(),
  timeoutMs: integer('timeout_ms').notNull(),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

/** A workspace's price for a model, per million tokens in micro-units; '*' prices unknown models. */
export const gatewayModelPrices = pgTable(
  'gateway_model_prices',
  {
    workspaceId: text('workspace_id').notNull(),
    model: text('model').notNull(),
    inputMicrosPerMtok: bigint('input_micros_per_mtok', { mode: 'number' }).notNull(),
    outputMicrosPerMtok: bigint('output_micros_per_mtok', { mode: 'number' }).notNull(),
    cachedInputMicrosPerMtok: bigint('cached_input_micros_per_mtok', { mode: 'number' }),
    contextWindow: integer('context_window'),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.model] })],
);

export type RouteTarget = { model: string; provider?: string; weight?: number };

/** A model alias: `alias` -> targets, tried in order or picked by weight. */
export const gatewayRoutes = pgTable(
  'gateway_routes',
  {
    workspaceId: text('workspace_id').notNull(),
    alias: text('alias').notNull(),
    strategy: text('strategy', { enum: ['fallback', 'weighted'] }).notNull(),
    targets: jsonb('targets').$type<RouteTarget[]>().notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.alias] })],
);

/** One gateway call: metadata only, never content. */
export const usageEvents = pgTable('usage_events', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  keyId: text('key_id'),
  userId: text('user_id'),
  requestId: text('request_id').notNull(),
  endpoint: text('endpoint').notNull(),
  provider: text('provider'),
  model: text('model').notNull(),
  status: integer('status').notNull(),
  errorCode: text('error_code'),
  stream: boolean('stream').notNull(),
  latencyMs: integer('latency_ms').notNull(),
  ttftMs: integer('ttft_ms'),
  inputTokens: integer('input_tokens').notNull(),
  outputTokens: integer('output_tokens').notNull(),
  cachedTokens: integer('cached_tokens').notNull(),
  reasoningTokens: integer('reasoning_tokens').notNull(),
  estimated: boolean('estimated').notNull(),
  costMicros: bigint('cost_micros', { mode: 'number' }).notNull(),
  attempts: integer('attempts').notNull(),
  createdAt: ts('created_at').notNull(),
  /** The credit lease the call was held against (null: its own reservation, or no ledger). */
  creditLeaseId: text('credit_lease_id'),
});

export type ProviderRow = typeof gatewayProviders.$inferSelect;
export type PlatformProviderRow = typeof platformProviders.$inferSelect;
export type PriceRow = typeof gatewayModelPrices.$inferSelect;
export type UsageEventRow = typeof usageEvents.$inferSelect;
export type RouteRow = typeof gatewayRoutes.$inferSelect;

/** The data map entries of the tables this module owns. */
export const gatewayTables = [
  mapTable(gatewayProviders, {
    purpose: 'Model providers a workspace connects to call models with its own credentials',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: col('tenancy', false, { purpose: 'Name the workspace gave the provider' }),
      adapter: col('tenancy', false, { purpose: 'Which upstream API the provider speaks' }),
      baseUrl: col('tenancy', false, { purpose: 'Where calls to the provider go' }),
      credentialsCiphertext: col('credential', false, {
        secret: true,
        purpose: "The provider's API key and headers, vault ciphertext",
      }),
      models: col('tenancy', false, { purpose: 'Models the provider serves' }),
      timeoutMs: col('tenancy', false),
      createdBy: col('identifier', true, { purpose: 'The member who connected the provider' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
  mapTable(platformProviders, {
    purpose: "Model providers the operator connects for every workspace, with the operator's credentials",
    basis: 'contract',
    retention: 'operational',
    subject: 'none',
    columns: {
      id: col('identifier', false),
      name: col('operational', false),
      adapter: col('operational', false),
      baseUrl: col('operational', false),
      credentialsCiphertext: col('credential', false, {
        secret: true,
        purpose: "The provider's API key and headers, vault ciphertext under the platform's data key",
      }),
      models: col('operational', false),
      timeoutMs: col('operational', false),
      createdBy: col('identifier', true, { purpose: 'The operator who connected the provider' }),
      createdAt: col('operational', false),
      updatedAt: col('operational', false),
    },
  }),
  mapTable(gatewayModelPrices, {
    purpose: 'Prices a workspace sets for models, to meter calls',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      model: col('billing', false),
      inputMicrosPerMtok: col('billing', false),
      outputMicrosPerMtok: col('billing', false),
      cachedInputMicrosPerMtok: col('billing', false),
      contextWindow: col('billing', false),
      updatedAt: col('billing', false),
    },
  }),
  mapTable(gatewayRoutes, {
    purpose: 'Model aliases a workspace defines to route calls across providers',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      alias: col('tenancy', false),
      strategy: col('tenancy', false),
      targets: col('tenancy', false, { purpose: 'Models and providers the alias routes to, with weights' }),
      updatedAt: col('tenancy', false),
    },
  }),
  mapTable(usageEvents, {
    purpose: 'Metering each gateway call (tokens, latency, status, cost) for usage reports, limits and billing',
    basis: 'contract',
    retention: 'usage_13_months',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      keyId: col('identifier', false, { purpose: 'The API key that made the call' }),
      userId: col('identifier', true, { purpose: 'The member whose key made the call' }),
      requestId: col('identifier', false, { purpose: 'Correlates the call with its response header and logs' }),
      endpoint: col('usage_metadata', false),
      provider: col('usage_metadata', false),
      model: col('usage_metadata', false),
      status: col('usage_metadata', false),
      errorCode: col('usage_metadata', false),
      stream: col('usage_metadata', false),
      latencyMs: col('usage_metadata', false),
      ttftMs: col('usage_metadata', false),
      inputTokens: col('usage_metadata', false),
      outputTokens: col('usage_metadata', false),
      cachedTokens: col('usage_metadata', false),
      reasoningTokens: col('usage_metadata', false),
      estimated: col('usage_metadata', false, { purpose: 'Whether token counts are an estimate (no provider usage)' }),
      costMicros: col('billing', false),
      attempts: col('usage_metadata', false),
      createdAt: col('usage_metadata', false),
      creditLeaseId: col('identifier', false, {
        purpose: 'Charges the calls of a credit lease whose replica stopped before settling it',
      }),
    },
  }),
];
