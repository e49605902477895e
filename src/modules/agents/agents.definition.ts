import { Ajv } from 'ajv';
import { AppError, type ErrorDetail } from '../../platform/errors.ts';
import { AGENT_FORMAT, AgentDefinition, type AgentDefinitionInput } from './agents.schemas.ts';

/**
 * The checks an agent definition passes before it is stored, beyond its zod shape (which
 * already refused unknown fields, tool types and built-in names, and limits out of range):
 * the format, unique tool names, `allowed_hosts` only where it means something, and custom
 * HTTP tools' `parameters` compiled as JSON Schema. Each refusal has its own code.
 */

// One compiler for every check: strict mode off (schemas written for models carry
// `description`, `examples`...), formats not validated (no format plugins), no console
// warnings. Each compiled schema is removed again, so none accumulates and `$id`s never clash.
const ajv = new Ajv({ strict: false, validateFormats: false, logger: false, allErrors: false });

/**
 * Why `schema` is not usable as a tool's parameters, or null when it is: it must be valid
 * JSON Schema (draft-07), compile (every `$ref` resolvable inside it) and describe an object.
 */
export function toolSchemaProblem(schema: Record<string, unknown>): string | null {
  if (schema.type !== 'object') return 'parameters must be a JSON Schema with "type": "object"';
  if (!ajv.validateSchema(schema)) {
    const first = ajv.errors?.[0];
    return `not a valid JSON Schema: ${first ? `${first.instancePath || '/'} ${first.message ?? 'is invalid'}` : 'invalid'}`;
  }
  try {
    ajv.compile(schema);
    return null;
  } catch (err) {
    return `not a usable JSON Schema: ${err instanceof Error ? err.message.slice(0, 200) : 'it does not compile'}`;
  } finally {
    ajv.removeSchema(schema);
  }
}

/** The name a tool takes in an agent (what must be unique): built-in and HTTP tools' names, an MCP server once. */
function toolKey(tool: AgentDefinition['tools'][number]): string {
  return tool.type === 'mcp' ? `mcp server ${tool.server}` : tool.name;
}

/**
 * Checks a definition that passed its zod schema and returns it with every default filled in
 * (`AgentDefinition.parse` output), the form stored, compared and exported.
 *
 * @example const definition = checkDefinition(req.body); // throws AppError('duplicate_tool_name', ...)
 */
export function checkDefinition(input: AgentDefinitionInput | AgentDefinition): AgentDefinition {
  const parsed = AgentDefinition.safeParse(input);
  if (!parsed.success) {
    const details: ErrorDetail[] = parsed.error.issues.map((i) => ({
      path: `/${i.path.map(String).join('/')}`,
      message: i.message,
    }));
    throw new AppError('validation_failed', 'The agent definition is not valid.', { details });
  }
  const def = parsed.data;
  if (def.format !== AGENT_FORMAT) {
    throw new AppError(
      'unsupported_agent_format',
      `This Berth reads agent definitions in the format ${AGENT_FORMAT}, not ${def.format.slice(0, 100)}.`,
      { details: [{ path: '/format', message: `expected ${AGENT_FORMAT}` }] },
    );
  }
  const seen = new Set<string>();
  def.tools.forEach((tool, i) => {
    const key = toolKey(tool);
    if (seen.has(key)) {
      throw new AppError(
        'duplicate_tool_name',
        `Two tools of this agent are named ${key}: give each tool its own name.`,
        {
          details: [{ path: `/tools/${i}`, message: `${key} is already a tool of this agent` }],
        },
      );
    }
    seen.add(key);
    if (tool.type === 'builtin' && tool.allowed_hosts !== undefined && tool.name !== 'http_request') {
      throw new AppError('validation_failed', 'The agent definition is not valid.', {
        details: [{ path: `/tools/${i}/allowed_hosts`, message: 'only the http_request tool has allowed_hosts' }],
      });
    }
    if (tool.type === 'http') {
      const problem = toolSchemaProblem(tool.parameters);
      if (problem) {
        throw new AppError(
          'invalid_tool_schema',
          `The parameters of the tool ${tool.name} are not usable: ${problem}.`,
          {
            details: [{ path: `/tools/${i}/parameters`, message: problem }],
          },
        );
      }
    }
  });
  return def;
}

/**
 * The text a definition is compared by (publishing an unchanged draft is refused): its JSON
 * in the stored key order, which is the schema's order for known fields and the author's
 * inside free-form objects (tool parameters, bodies, metadata).
 */
export function definitionText(def: AgentDefinition): string {
  return JSON.stringify(def);
}
