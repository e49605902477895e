import { z } from 'zod';
import { ToolDef } from './agents.tools.schemas.ts';

/**
 * The agent definition format (`berth.agent/v1`): the body of create, update and import,
 * what a version freezes and what export returns. Field names are snake_case because the
 * format is a file people keep and edit, like the OpenAI request bodies it feeds. Secrets
 * are never in it: connections, MCP servers and workspace secrets are named, not included.
 * Every field has its default written out when stored, so an export shows the whole
 * definition and importing it back gives the same one.
 */

export const AGENT_FORMAT = 'berth.agent/v1';

/** Limits the run engine enforces exactly. */
export const LIMIT_RANGES = {
  max_steps: { min: 1, max: 100, default: 10 },
  max_tokens: { min: 1, max: 100_000_000, default: 200_000 },
  timeout_seconds: { min: 1, max: 3600, default: 300 },
} as const;

/** An agent's name: what the CLI and the API accept in place of its id (ids start with `agt_`). */
export const AgentName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'letters, digits, _ . and -, starting with a letter or digit, up to 64')
  .refine((n) => !n.startsWith('agt_'), 'names starting with agt_ are reserved for ids');

/** A knowledge base or connection, named (resolved when a run starts). */
const RefName = z.string().trim().min(1).max(100);
const uniqueNames = (a: readonly string[]) => new Set(a).size === a.length;

const Params = z
  .strictObject({
    temperature: z.number().min(0).max(2).optional(),
    top_p: z.number().min(0).max(1).optional(),
    max_output_tokens: z.number().int().min(1).max(1_000_000).optional(),
    presence_penalty: z.number().min(-2).max(2).optional(),
    frequency_penalty: z.number().min(-2).max(2).optional(),
    stop: z.array(z.string().min(1).max(256)).max(4).optional(),
    seed: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).optional(),
    reasoning_effort: z.enum(['minimal', 'low', 'medium', 'high']).optional(),
  })
  .describe('Model parameters sent with every model call of a run (absent: the model default)');

const range = (r: { min: number; max: number; default: number }) =>
  z.number().int().min(r.min).max(r.max).default(r.default);

const Limits = z
  .strictObject({
    max_steps: range(LIMIT_RANGES.max_steps).describe('Model calls a run may make, 1 to 100'),
    max_tokens: range(LIMIT_RANGES.max_tokens).describe('Tokens (input + output) a run may use, at least 1'),
    timeout_seconds: range(LIMIT_RANGES.timeout_seconds).describe('Wall-clock time a run may take, 1 to 3600 s'),
  })
  .describe('What a run may use before it stops');

const Metadata = z
  .record(z.string().min(1).max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 32, 'at most 32 keys')
  .describe('Up to 32 string values of your own (never used by Berth)');

export const AgentDefinition = z.strictObject({
  format: z
    .string()
    .min(1)
    .max(100)
    .default(AGENT_FORMAT)
    .describe(`The definition format: ${AGENT_FORMAT} (others answer 400 unsupported_agent_format)`),
  name: AgentName,
  description: z.string().max(2000).default(''),
  model: z.string().trim().min(1).max(200).describe('A model or alias of the workspace (checked when a run starts)'),
  instructions: z
    .string()
    .max(200_000)
    .default('')
    .describe('The system instructions (customer content, never logged)'),
  params: Params.default({}),
  limits: Limits.default({
    max_steps: LIMIT_RANGES.max_steps.default,
    max_tokens: LIMIT_RANGES.max_tokens.default,
    timeout_seconds: LIMIT_RANGES.timeout_seconds.default,
  }),
  tools: z.array(ToolDef).max(128).default([]),
  tool_approval: z
    .enum(['never', 'per_tool', 'always'])
    .default('per_tool')
    .describe("When a tool call waits for a person: never, per_tool (the tool's requires_approval), always"),
  knowledge_bases: z
    .array(RefName)
    .max(32)
    .refine(uniqueNames, 'each knowledge base once')
    .default([])
    .describe('Knowledge bases the agent may search, by name'),
  connections: z
    .array(RefName)
    .max(32)
    .refine(uniqueNames, 'each connection once')
    .default([])
    .describe('OAuth connections the agent may act through, by name'),
  metadata: Metadata.default({}),
});
/** A definition as stored and exported: every default filled in. */
export type AgentDefinition = z.infer<typeof AgentDefinition>;
/** A definition as written by a person: defaults may be left out. */
export type AgentDefinitionInput = z.input<typeof AgentDefinition>;

const Id = z.string().min(1).max(64);
export const WorkspaceParams = z.strictObject({ workspaceId: Id });
export const AgentParams = z.strictObject({
  workspaceId: Id,
  agentId: z.string().min(1).max(64).describe('The agent id (agt_...) or the name of a live agent'),
});
export const VersionParams = AgentParams.extend({ version: z.coerce.number().int().min(1).max(1_000_000) });

export const ListAgentsQuery = z.strictObject({
  cursor: Id.optional().describe('The last id of the previous page'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  archived: z.enum(['true', 'false']).optional().describe('true: list archived agents too'),
});
export const ListVersionsQuery = z.strictObject({
  cursor: z.coerce.number().int().min(1).max(1_000_000).optional().describe('The last version of the previous page'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
export const ExportQuery = z.strictObject({
  version: z.coerce.number().int().min(1).max(1_000_000).optional().describe('A published version (absent: the draft)'),
});
export const ImportQuery = z.strictObject({
  publish: z.enum(['true', 'false']).optional().describe('true: also publish the imported definition as version 1'),
});

export const VersionSummary = z.object({
  id: z.string(),
  agentId: z.string(),
  version: z.number().int(),
  createdBy: z.string().nullable().describe('The member who published it'),
  createdAt: z.string(),
});
export type VersionSummary = z.infer<typeof VersionSummary>;
export const VersionView = VersionSummary.extend({ definition: AgentDefinition });
export type VersionView = z.infer<typeof VersionView>;
export const VersionList = z.object({ data: z.array(VersionSummary), nextCursor: z.number().int().nullable() });

export const AgentSummary = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  model: z.string(),
  latestVersion: z.number().int().nullable().describe('The latest published version (null: none yet)'),
  unpublishedChanges: z.boolean().describe('The draft differs from the latest version (or none was published)'),
  createdAt: z.string(),
  updatedAt: z.string(),
  archivedAt: z.string().nullable(),
});
export type AgentSummary = z.infer<typeof AgentSummary>;
export const AgentList = z.object({ data: z.array(AgentSummary), nextCursor: z.string().nullable() });

export const AgentView = AgentSummary.omit({ description: true, model: true, latestVersion: true }).extend({
  workspaceId: z.string(),
  draft: AgentDefinition,
  latestVersion: VersionView.nullable(),
});
export type AgentView = z.infer<typeof AgentView>;
