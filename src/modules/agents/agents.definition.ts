import { AppError, type ErrorDetail } from '../../platform/errors.ts';
import { AGENT_FORMAT, AgentDefinition, type AgentDefinitionInput } from './agents.schemas.ts';
import { parametersProblem } from './agents.tools.core.ts';
import { connectionRefs, secretRefs } from './agents.tools.http.ts';
import { credentialParams, hasUserInfo, isCredentialHeader, isTemplatedCredential } from './agents.tools.policy.ts';

/**
 * The checks an agent definition passes before it is stored, beyond its zod shape (which
 * already refused unknown fields, tool types and built-in names, and limits out of range):
 * the format, unique tool names, `allowed_hosts` only where it means something, and custom
 * HTTP tools' `parameters` compiled as JSON Schema. Each refusal has its own code.
 */

/**
 * Why `schema` is not usable as a tool's parameters, or null when it is: it must describe an
 * object, stay within the depth and size limits (`SCHEMA_LIMITS`), be valid JSON Schema
 * (draft-07) and compile (every `$ref` resolvable inside it). The validator's own failures
 * are reasons too, never thrown.
 */
export function toolSchemaProblem(schema: Record<string, unknown>): string | null {
  if (schema.type !== 'object') return 'parameters must be a JSON Schema with "type": "object"';
  return parametersProblem(schema);
}

const secretPlacement = (path: string, message: string) =>
  new AppError('secret_placement_not_allowed', `A workspace secret may not be used here: ${message}.`, {
    details: [{ path, message }],
  });

const connectionPlacement = (path: string, message: string) =>
  new AppError('connection_placement_not_allowed', `A connection's token may not be used here: ${message}.`, {
    details: [{ path, message }],
  });

const literalCredential = (path: string, message: string) =>
  new AppError(
    'credential_in_definition',
    `Definitions are readable by every member and exported as they are: ${message}. Store the value as a workspace secret and reference it as {{secret.NAME}} in a header.`,
    { details: [{ path, message }] },
  );

/**
 * A custom HTTP tool's credentials: secrets and connection tokens only in headers (never in
 * the URL or the body, where a service could show them back), only connections the agent
 * lists in `connections`, no literal credentials in the URL (user-info, `?api_key=`) or in
 * credential headers (`Authorization: Bearer sk-...`).
 */
function checkHttpToolCredentials(
  tool: Extract<AgentDefinition['tools'][number], { type: 'http' }>,
  i: number,
  declared: ReadonlySet<string>,
) {
  const { url, headers, body } = tool.request;
  if (secretRefs(url).size > 0) throw secretPlacement(`/tools/${i}/request/url`, 'secrets go in headers, not the URL');
  if (body !== undefined && secretRefs(body).size > 0) {
    throw secretPlacement(`/tools/${i}/request/body`, 'secrets go in headers, not the body');
  }
  if (connectionRefs(url).size > 0) {
    throw connectionPlacement(`/tools/${i}/request/url`, 'connection tokens go in headers, not the URL');
  }
  if (body !== undefined && connectionRefs(body).size > 0) {
    throw connectionPlacement(`/tools/${i}/request/body`, 'connection tokens go in headers, not the body');
  }
  for (const [name, value] of Object.entries(headers ?? {})) {
    for (const ref of connectionRefs(value)) {
      if (declared.has(ref)) continue;
      throw new AppError(
        'connection_not_declared',
        `The tool ${tool.name} uses the connection ${ref}, which the agent's connections do not list: add it there.`,
        { details: [{ path: `/tools/${i}/request/headers/${name}`, message: `${ref} is not in /connections` }] },
      );
    }
  }
  if (hasUserInfo(url)) throw literalCredential(`/tools/${i}/request/url`, 'the URL carries user-info credentials');
  const params = credentialParams(url);
  if (params.length > 0) {
    throw literalCredential(`/tools/${i}/request/url`, `the URL's query carries ${params.join(', ').slice(0, 200)}`);
  }
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (isCredentialHeader(name) && !isTemplatedCredential(value)) {
      throw literalCredential(`/tools/${i}/request/headers/${name}`, `the header ${name} has a literal value`);
    }
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
  const connections = new Set(def.connections);
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
      checkHttpToolCredentials(tool, i, connections);
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
