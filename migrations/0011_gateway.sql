-- The gateway: model providers a workspace connects (its own keys, BYOK), its price
-- overrides, and one usage event per call. Usage events hold metadata only: never a
-- prompt, a completion, tool arguments or an upstream error body.

create table gateway_providers (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  name text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  adapter text not null check (adapter in ('openai-compatible', 'anthropic')),
  base_url text not null check (char_length(base_url) between 8 and 2000),
  -- The upstream credential (API key and extra headers) as vault ciphertext, bound to this row.
  credentials_ciphertext bytea,
  models text[] not null default '{}',
  timeout_ms integer not null check (timeout_ms between 1000 and 600000),
  created_by text references users(id) on delete set null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  unique (workspace_id, name)
);
select berth_enable_tenant_rls('gateway_providers');

-- Prices per million tokens in integer micro-units; model '*' prices every model the
-- catalog does not know.
create table gateway_model_prices (
  workspace_id text not null references workspaces(id) on delete cascade,
  model text not null check (char_length(model) between 1 and 200),
  input_micros_per_mtok bigint not null check (input_micros_per_mtok >= 0),
  output_micros_per_mtok bigint not null check (output_micros_per_mtok >= 0),
  cached_input_micros_per_mtok bigint check (cached_input_micros_per_mtok >= 0),
  context_window integer check (context_window > 0),
  updated_at timestamptz not null,
  primary key (workspace_id, model)
);
select berth_enable_tenant_rls('gateway_model_prices');

create table usage_events (
  id text primary key,
  workspace_id text not null references workspaces(id) on delete cascade,
  -- No foreign keys: a usage event outlives the key and member it names (billing records).
  key_id text,
  user_id text,
  request_id text not null unique,
  endpoint text not null,
  provider text,
  model text not null,
  status integer not null,
  error_code text,
  stream boolean not null,
  latency_ms integer not null check (latency_ms >= 0),
  ttft_ms integer check (ttft_ms >= 0),
  input_tokens integer not null check (input_tokens >= 0),
  output_tokens integer not null check (output_tokens >= 0),
  cached_tokens integer not null check (cached_tokens >= 0),
  reasoning_tokens integer not null check (reasoning_tokens >= 0),
  estimated boolean not null,
  cost_micros bigint not null check (cost_micros >= 0),
  attempts integer not null check (attempts >= 0),
  created_at timestamptz not null
);
create index usage_events_workspace_time_idx on usage_events (workspace_id, created_at, id);
select berth_enable_tenant_rls('usage_events');

-- Model aliases: a name callers use (`fast`) for an ordered list of targets, tried in order
-- (fallback) or picked by weight (weighted), with the rest as fallbacks.
create table gateway_routes (
  workspace_id text not null references workspaces(id) on delete cascade,
  alias text not null check (alias ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$'),
  strategy text not null check (strategy in ('fallback', 'weighted')),
  -- [{ "model": "gpt-4o", "provider": "openai", "weight": 3 }, ...]
  targets jsonb not null check (jsonb_typeof(targets) = 'array' and jsonb_array_length(targets) between 1 and 20),
  updated_at timestamptz not null,
  primary key (workspace_id, alias)
);
select berth_enable_tenant_rls('gateway_routes');
