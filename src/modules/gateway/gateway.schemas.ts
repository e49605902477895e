import { z } from 'zod';
import { NO_CONTROL_CHARACTERS } from '../../platform/http/schemas.ts';
import { isObject } from './providers/http.ts';

/** Request and response shapes of the gateway: the /api management routes and the /v1 inbound API. */

const Id = z.string().min(1).max(64);
const ModelName = z.string().trim().min(1).max(200).regex(NO_CONTROL_CHARACTERS, 'no control characters');
const HeaderName = z.string().regex(/^[A-Za-z0-9-]{1,100}$/, 'an HTTP header name');
const HeaderValue = z
  .string()
  .max(4000)
  .regex(/^[^\r\n\0]*$/, 'no line breaks');
const Micros = z.number().int().min(0).max(1_000_000_000_000);

export const WorkspaceParams = z.strictObject({ workspaceId: Id });
export const ProviderParams = z.strictObject({ workspaceId: Id, providerId: Id });
export const PlatformProviderParams = z.strictObject({ provider: z.string().min(1).max(64) });
export const PriceParams = z.strictObject({ workspaceId: Id, model: ModelName });

export const AddProviderBody = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, - and _, up to 63 characters')
    .describe('Unique in the workspace; callers may address a model as name/model'),
  adapter: z.enum(['openai-compatible', 'anthropic']),
  baseUrl: z.string().min(8).max(2000).describe('e.g. https://api.openai.com/v1'),
  apiKey: z
    .string()
    .min(1)
    .max(4000)
    .regex(/^[^\r\n\0]*$/, 'no line breaks')
    .optional()
    .describe('Stored encrypted, never returned'),
  headers: z.record(HeaderName, HeaderValue).optional().describe('Extra headers sent upstream; stored encrypted'),
  models: z
    .array(ModelName)
    .min(1)
    .max(1000)
    .optional()
    .describe('Models it serves; absent = ask the provider (GET /models)'),
  timeoutMs: z.number().int().min(1000).max(600_000).optional().describe('Per-attempt timeout, default 60000'),
});
export type AddProviderInput = z.infer<typeof AddProviderBody>;

export const ProviderView = z.object({
  id: z.string(),
  name: z.string(),
  adapter: z.enum(['openai-compatible', 'anthropic']),
  baseUrl: z.string(),
  models: z.array(z.string()),
  timeoutMs: z.number(),
  hasCredentials: z.boolean(),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type ProviderView = z.infer<typeof ProviderView>;
export const ProviderList = z.object({ data: z.array(ProviderView) });

export const SetPriceBody = z.strictObject({
  model: ModelName.describe("A model id, or '*' for every model the catalog does not price"),
  inputMicrosPerMtok: Micros.describe('Micro-units per million prompt tokens (2.50 USD = 2500000)'),
  outputMicrosPerMtok: Micros,
  cachedInputMicrosPerMtok: Micros.nullable().optional(),
  contextWindow: z.number().int().min(1).max(100_000_000).nullable().optional(),
});
export type SetPriceInput = z.infer<typeof SetPriceBody>;

export const PriceView = z.object({
  model: z.string(),
  inputMicrosPerMtok: z.number(),
  outputMicrosPerMtok: z.number(),
  cachedInputMicrosPerMtok: z.number().nullable(),
  contextWindow: z.number().nullable(),
  updatedAt: z.string(),
});
export type PriceView = z.infer<typeof PriceView>;
export const PriceList = z.object({ data: z.array(PriceView) });

export const RouteParams = z.strictObject({ workspaceId: Id, alias: z.string().min(1).max(100) });

const RouteTargetSchema = z.strictObject({
  model: ModelName,
  provider: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/)
    .optional()
    .describe('Only this provider; absent = every provider serving the model'),
  weight: z.number().int().min(0).max(1000).optional().describe('Share of calls with strategy weighted (default 1)'),
});

export const SetRouteBody = z.strictObject({
  alias: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/, 'letters, digits, . _ : -, up to 100')
    .describe('The model name callers use, e.g. fast'),
  strategy: z
    .enum(['fallback', 'weighted'])
    .optional()
    .describe('fallback: targets in order; weighted: first target picked by weight, the others as fallbacks'),
  targets: z.array(RouteTargetSchema).min(1).max(20),
});
export type SetRouteInput = z.infer<typeof SetRouteBody>;

export const RouteView = z.object({
  alias: z.string(),
  strategy: z.enum(['fallback', 'weighted']),
  targets: z.array(z.object({ model: z.string(), provider: z.string().optional(), weight: z.number().optional() })),
  updatedAt: z.string(),
});
export type RouteView = z.infer<typeof RouteView>;
export const RouteList = z.object({ data: z.array(RouteView) });

export const ModelView = z.object({
  id: z.string(),
  provider: z.string(),
  price: z
    .object({
      inputMicrosPerMtok: z.number(),
      outputMicrosPerMtok: z.number(),
      cachedInputMicrosPerMtok: z.number().nullable(),
      contextWindow: z.number().nullable(),
    })
    .nullable(),
});
export type ModelView = z.infer<typeof ModelView>;
export const ModelList = z.object({ data: z.array(ModelView), catalogVersion: z.string() });

const IsoTime = z.iso.datetime({ offset: true });
export const UsageQuery = z.strictObject({
  since: IsoTime.optional().describe('Default: 30 days ago'),
  until: IsoTime.optional().describe('Default: now'),
  groupBy: z.enum(['day', 'model', 'key', 'provider']).optional().describe('Aggregate instead of listing events'),
  keyId: Id.optional(),
  model: ModelName.optional(),
  cursor: Id.optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

export const UsageEventView = z.object({
  id: z.string(),
  requestId: z.string(),
  keyId: z.string().nullable(),
  userId: z.string().nullable(),
  endpoint: z.string(),
  provider: z.string().nullable(),
  model: z.string(),
  status: z.number(),
  errorCode: z.string().nullable(),
  stream: z.boolean(),
  latencyMs: z.number(),
  ttftMs: z.number().nullable(),
  inputTokens: z.number(),
  outputTokens: z.number(),
  cachedTokens: z.number(),
  reasoningTokens: z.number(),
  estimated: z.boolean(),
  costMicros: z.number(),
  attempts: z.number(),
  createdAt: z.string(),
});
export type UsageEventView = z.infer<typeof UsageEventView>;
export const UsageAggregateView = z.object({
  group: z.string(),
  requests: z.number(),
  errors: z.number(),
  inputTokens: z.number(),
  outputTokens: z.number(),
  cachedTokens: z.number(),
  reasoningTokens: z.number(),
  costMicros: z.number(),
});
export type UsageAggregateView = z.infer<typeof UsageAggregateView>;
export const UsageAnswer = z.object({
  data: z.array(z.union([UsageEventView, UsageAggregateView])),
  nextCursor: z.string().nullable(),
});

// ---- /v1 (OpenAI's shapes). Validation checks types; fields Berth does not know are not forwarded.

const TextPart = z.looseObject({ type: z.literal('text'), text: z.string() });
const ImagePart = z.looseObject({
  type: z.literal('image_url'),
  image_url: z.looseObject({ url: z.string().min(1), detail: z.enum(['auto', 'low', 'high']).optional() }),
});
const ContentPart = z.union([TextPart, ImagePart, z.looseObject({ type: z.string() })]);
const Content = z.union([z.string(), z.array(ContentPart)]).nullable();

const ToolCallSchema = z.looseObject({
  id: z.string(),
  type: z.literal('function'),
  function: z.looseObject({ name: z.string(), arguments: z.string() }),
});

const Message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: Content.optional(),
  name: z.string().optional(),
  tool_calls: z.array(ToolCallSchema).optional(),
  tool_call_id: z.string().optional(),
  reasoning_content: z.string().optional(),
});

const ToolDefinitionSchema = z.looseObject({
  type: z.literal('function'),
  function: z.looseObject({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'letters, digits, _ and -, up to 64'),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullable().optional(),
  }),
});

export const ChatCompletionBody = z.looseObject({
  model: ModelName,
  messages: z.array(Message).min(1),
  stream: z.boolean().nullable().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  tools: z.array(ToolDefinitionSchema).max(128).optional(),
  tool_choice: z
    .union([
      z.enum(['none', 'auto', 'required']),
      z.looseObject({ type: z.literal('function'), function: z.looseObject({ name: z.string() }) }),
    ])
    .optional(),
  parallel_tool_calls: z.boolean().optional(),
  response_format: z.looseObject({ type: z.string() }).optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  max_tokens: z.number().int().min(1).nullable().optional(),
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  n: z.number().int().min(1).max(16).nullable().optional(),
  stop: z
    .union([z.string(), z.array(z.string()).max(4)])
    .nullable()
    .optional(),
  seed: z.number().int().nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  logit_bias: z.record(z.string(), z.number()).nullable().optional(),
  user: z.string().max(256).optional(),
  reasoning_effort: z.string().max(32).nullable().optional(),
  reasoning: z.record(z.string(), z.unknown()).optional(),
});

export const EmbeddingsBody = z.looseObject({
  model: ModelName,
  input: z.union([
    z.string(),
    z.array(z.string()).min(1).max(2048),
    z.array(z.number().int()).min(1),
    z.array(z.array(z.number().int()).min(1)).min(1).max(2048),
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().min(1).max(65_536).optional(),
  user: z.string().max(256).optional(),
});

export const ModelIdParams = z.object({ model: z.string().min(1).max(300) });

// ---- /v1/messages (Anthropic's shapes)

const AnthropicText = z.looseObject({ type: z.literal('text'), text: z.string() });
const AnthropicImage = z.looseObject({
  type: z.literal('image'),
  source: z.union([
    z.looseObject({ type: z.literal('base64'), media_type: z.string(), data: z.string() }),
    z.looseObject({ type: z.literal('url'), url: z.string() }),
  ]),
});
const AnthropicBlock = z.union([
  AnthropicText,
  AnthropicImage,
  z.looseObject({ type: z.literal('tool_use'), id: z.string(), name: z.string(), input: z.unknown() }),
  z.looseObject({
    type: z.literal('tool_result'),
    tool_use_id: z.string(),
    content: z.union([z.string(), z.array(z.union([AnthropicText, AnthropicImage]))]).optional(),
    is_error: z.boolean().optional(),
  }),
  z.looseObject({ type: z.literal('thinking'), thinking: z.string() }),
  z.looseObject({ type: z.string() }),
]);

export const MessagesBody = z.looseObject({
  model: ModelName,
  max_tokens: z.number().int().min(1),
  messages: z
    .array(
      z.looseObject({ role: z.enum(['user', 'assistant']), content: z.union([z.string(), z.array(AnthropicBlock)]) }),
    )
    .min(1),
  system: z.union([z.string(), z.array(AnthropicText)]).optional(),
  stop_sequences: z.array(z.string()).max(16).optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  stream: z.boolean().optional(),
  tools: z
    .array(
      z.looseObject({
        name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'letters, digits, _ and -, up to 64'),
        description: z.string().optional(),
        input_schema: z.record(z.string(), z.unknown()),
      }),
    )
    .max(128)
    .optional(),
  tool_choice: z
    .union([
      z.looseObject({ type: z.enum(['auto', 'any', 'none']), disable_parallel_tool_use: z.boolean().optional() }),
      z.looseObject({ type: z.literal('tool'), name: z.string(), disable_parallel_tool_use: z.boolean().optional() }),
    ])
    .optional(),
  metadata: z.looseObject({ user_id: z.string().max(256).optional() }).optional(),
  thinking: z
    .union([
      z.looseObject({ type: z.literal('enabled'), budget_tokens: z.number().int().min(1) }),
      z.looseObject({ type: z.literal('disabled') }),
    ])
    .optional(),
});

const MESSAGE_ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);
const inRange = (v: unknown, min: number, max: number) => v === null || (typeof v === 'number' && v >= min && v <= max);
const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER) =>
  v === null || (Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max);

/** The plain fields of a chat body and the check each passes; any other field goes to the full schema. */
const plainChatChecks: Record<string, (v: unknown) => boolean> = {
  model: (v) =>
    typeof v === 'string' && v.length >= 1 && v.length <= 200 && v.trim() === v && NO_CONTROL_CHARACTERS.test(v),
  messages: (v) => Array.isArray(v) && v.length >= 1 && v.every(isPlainMessage),
  stream: (v) => v === null || typeof v === 'boolean',
  stream_options: (v) =>
    v === null || (isObject(v) && Object.keys(v).every((k) => k === 'include_usage' && typeof v[k] === 'boolean')),
  temperature: (v) => inRange(v, 0, 2),
  top_p: (v) => inRange(v, 0, 1),
  max_tokens: (v) => isInt(v, 1),
  max_completion_tokens: (v) => isInt(v, 1),
  n: (v) => isInt(v, 1, 16),
  seed: (v) => isInt(v, Number.MIN_SAFE_INTEGER),
  presence_penalty: (v) => inRange(v, -2, 2),
  frequency_penalty: (v) => inRange(v, -2, 2),
  user: (v) => typeof v === 'string' && v.length <= 256,
};
const PLAIN_CHAT_FIELDS = new Map(Object.entries(plainChatChecks));

function isPlainMessage(m: unknown): boolean {
  if (!isObject(m)) return false;
  for (const k in m) {
    const v = m[k];
    if (k === 'role') {
      if (typeof v !== 'string' || !MESSAGE_ROLES.has(v)) return false;
    } else if (k !== 'content' && k !== 'name') return false;
    else if (typeof v !== 'string') return false;
  }
  return typeof m.role === 'string';
}

/**
 * True for the common chat body (text messages and plain sampling fields) when every field
 * passes what `ChatCompletionBody` checks, so the schema would return it unchanged. The
 * gateway checks this first and parses only other bodies with the schema, which is several
 * times slower on a hot path that runs for every call. It never accepts a body the schema
 * refuses (a test compares both on generated bodies).
 */
export function isPlainChatBody(body: unknown): body is z.infer<typeof ChatCompletionBody> {
  if (!isObject(body) || !('model' in body) || !('messages' in body)) return false;
  for (const k in body) {
    const check = PLAIN_CHAT_FIELDS.get(k);
    if (!check?.(body[k])) return false;
  }
  return true;
}
