import { z } from 'zod';
import { RUN_STATUSES, STOP_REASONS } from './agents.runs.tables.ts';

const Id = z.string().min(1).max(64);

/** A message of a run's input (the conversation the run answers). */
const InputMessage = z.strictObject({
  role: z.enum(['user', 'assistant']),
  content: z.string().max(1_000_000),
});

export const CreateRunBody = z
  .strictObject({
    agent: z.string().min(1).max(64).describe('The agent id (agt_...) or the name of a live agent'),
    version: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .optional()
      .describe('The published version to run (default: the latest)'),
    input: z
      .union([z.string().min(1).max(1_000_000), z.array(InputMessage).min(1).max(1000)])
      .describe('What the run answers: a text, or messages ending with the user turn (customer content)'),
    previous_run_id: Id.optional().describe('A finished run this one continues (its conversation comes first)'),
    stream: z.boolean().default(false).describe('true: answer with the run events as server-sent events'),
    background: z
      .boolean()
      .default(false)
      .describe('true: answer 202 at once with the queued run; a worker runs it (poll it or follow its events)'),
  })
  .refine((b) => !(b.stream && b.background), { message: 'stream and background cannot both be true' });
export type CreateRunInput = z.infer<typeof CreateRunBody>;

export const RunParams = z.strictObject({ workspaceId: Id, runId: Id });
export const ListRunsQuery = z.strictObject({
  agent: z.string().min(1).max(64).optional().describe('Only runs of this agent (id or name)'),
  status: z.enum(RUN_STATUSES).optional(),
  cursor: Id.optional().describe('The last id of the previous page'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
export const EventsQuery = z.strictObject({
  after: z.coerce
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .optional()
    .describe('Replay events after this sequence number (as the Last-Event-ID header does)'),
});

export const DecisionBody = z.strictObject({
  tool_call_id: z
    .string()
    .min(1)
    .max(200)
    .optional()
    .describe('The tool call decided on (default: every call the run waits for)'),
  arguments: z
    .string()
    .max(1_000_000)
    .optional()
    .describe('Approve only: the arguments to run the call with instead (a JSON object as text)'),
  reason: z.string().max(2000).optional().describe('Deny only: why, told to the model'),
});
export type DecisionInput = z.infer<typeof DecisionBody>;

const ToolCallView = z.object({ id: z.string(), name: z.string(), arguments: z.string() });

export const RunView = z.object({
  id: z.string(),
  object: z.literal('agent.run'),
  workspaceId: z.string(),
  agentId: z.string(),
  agentVersion: z.number().int(),
  status: z.enum(RUN_STATUSES),
  stopReason: z.enum(STOP_REASONS).nullable(),
  lastError: z.object({ code: z.string(), message: z.string() }).nullable(),
  input: z.union([z.string(), z.array(InputMessage)]),
  output: z.string().nullable(),
  requiredAction: z
    .object({
      type: z.literal('approve_tool_calls'),
      toolCalls: z.array(ToolCallView),
      expiresAt: z.string(),
    })
    .nullable(),
  usage: z.object({
    inputTokens: z.number().int(),
    outputTokens: z.number().int(),
    totalTokens: z.number().int(),
    modelSteps: z.number().int(),
    toolSteps: z.number().int(),
  }),
  costMicros: z.number().int(),
  previousRunId: z.string().nullable(),
  userId: z.string().nullable(),
  keyId: z.string().nullable(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  completedAt: z.string().nullable(),
});
export type RunView = z.infer<typeof RunView>;

export const StepView = z.object({
  seq: z.number().int(),
  kind: z.enum(['model', 'tool']),
  status: z.enum(['running', 'completed', 'failed', 'denied', 'interrupted']),
  toolName: z.string().nullable(),
  toolCallId: z.string().nullable(),
  errorCode: z.string().nullable(),
  /** A model step's message; a tool step's arguments and result. */
  content: z.unknown(),
  inputTokens: z.number().int(),
  outputTokens: z.number().int(),
  costMicros: z.number().int(),
  latencyMs: z.number().int().nullable(),
  startedAt: z.string(),
  completedAt: z.string().nullable(),
});
export type StepView = z.infer<typeof StepView>;

export const RunList = z.object({ data: z.array(RunView), nextCursor: z.string().nullable() });
export const StepList = z.object({ data: z.array(StepView) });

export const AgentUsageView = z.object({
  agentId: z.string(),
  since: z.string(),
  runs: z.number().int(),
  inputTokens: z.number().int(),
  outputTokens: z.number().int(),
  costMicros: z.number().int(),
});
