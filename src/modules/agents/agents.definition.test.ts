import { describe, expect, it } from 'vitest';
import { AppError } from '../../platform/errors.ts';
import { checkDefinition, definitionText, toolSchemaProblem } from './agents.definition.ts';
import type { AgentDefinitionInput } from './agents.schemas.ts';

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return err instanceof AppError ? err.code : 'not an AppError';
  }
};

describe('happy', () => {
  it('fills every default, in the format’s key order, and is stable when checked again', () => {
    const def = checkDefinition({ metadata: { b: '1', a: '2' }, model: 'm', name: 'n' });
    expect(Object.keys(def)).toEqual([
      'format',
      'name',
      'description',
      'model',
      'instructions',
      'params',
      'limits',
      'tools',
      'tool_approval',
      'knowledge_bases',
      'connections',
      'metadata',
    ]);
    // Free-form objects keep their author's order.
    expect(Object.keys(def.metadata)).toEqual(['b', 'a']);
    expect(definitionText(checkDefinition(def))).toBe(definitionText(def));
  });

  it('accepts JSON Schemas written for models (descriptions, examples, formats, local $refs)', () => {
    expect(
      toolSchemaProblem({
        type: 'object',
        $id: 'https://example.com/args',
        properties: {
          email: { type: 'string', format: 'email', description: 'who', examples: ['a@example.com'] },
          item: { $ref: '#/definitions/item' },
        },
        definitions: { item: { type: 'integer', minimum: 0 } },
      }),
    ).toBeNull();
    // The same $id again: nothing was left registered.
    expect(toolSchemaProblem({ type: 'object', $id: 'https://example.com/args' })).toBeNull();
  });
});

describe('errors', () => {
  it('names why a tool schema is unusable', () => {
    expect(toolSchemaProblem({ type: 'array' })).toMatch(/"type": "object"/);
    expect(toolSchemaProblem({ type: 'object', properties: { a: { type: 'nope' } } })).toMatch(
      /not a valid JSON Schema/,
    );
    expect(toolSchemaProblem({ type: 'object', properties: { a: { $ref: '#/nowhere' } } })).toMatch(/not a usable/);
    expect(toolSchemaProblem({ type: 'object', properties: { a: { pattern: '(' } } })).not.toBeNull();
  });

  it('refuses with a code per kind of mistake', () => {
    const base = { name: 'n', model: 'm' };
    expect(codeOf(() => checkDefinition({ ...base, format: 'berth.agent/v0' }))).toBe('unsupported_agent_format');
    expect(codeOf(() => checkDefinition({ ...base, limits: { max_steps: 101 } }))).toBe('validation_failed');
    expect(
      codeOf(() =>
        checkDefinition({
          ...base,
          tools: [
            { type: 'builtin', name: 'current_time' },
            { type: 'builtin', name: 'current_time' },
          ],
        }),
      ),
    ).toBe('duplicate_tool_name');
    expect(
      codeOf(() =>
        checkDefinition({
          ...base,
          tools: [
            {
              type: 'http',
              name: 'x',
              description: '',
              parameters: { type: 'object', required: [1] },
              request: { method: 'GET', url: 'https://a.example' },
            },
          ],
        }),
      ),
    ).toBe('invalid_tool_schema');
    expect(codeOf(() => checkDefinition({ ...base, knowledge_bases: ['a', 'a'] }))).toBe('validation_failed');
  });

  it('a schema nested past 32 levels or larger than 64 KB is invalid_tool_schema, never a crash', () => {
    const nested = (depth: number) => {
      let schema: Record<string, unknown> = { type: 'string' };
      for (let i = 0; i < depth; i++) schema = { type: 'object', properties: { a: schema } };
      return schema;
    };
    const tool = (parameters: Record<string, unknown>) => ({
      name: 'n',
      model: 'm',
      tools: [
        {
          type: 'http' as const,
          name: 't',
          description: '',
          parameters,
          request: { method: 'GET' as const, url: 'https://a.example' },
        },
      ],
    });
    expect(codeOf(() => checkDefinition(tool(nested(1000))))).toBe('invalid_tool_schema');
    expect(toolSchemaProblem(nested(1000))).toMatch(/deeper than 32/);
    expect(codeOf(() => checkDefinition(tool(nested(10))))).toBe('ok');
    const wide = {
      type: 'object',
      properties: Object.fromEntries(
        Array.from({ length: 2000 }, (_, i) => [`p${i}`, { type: 'string', description: 'x'.repeat(30) }]),
      ),
    };
    expect(toolSchemaProblem(wide)).toMatch(/larger than 65536 bytes/);
  });

  it('refuses secrets outside headers and literal credentials in a definition', () => {
    const http = (request: Record<string, unknown>) =>
      ({
        name: 'n',
        model: 'm',
        tools: [{ type: 'http', name: 't', description: '', parameters: { type: 'object' }, request }],
      }) as unknown as AgentDefinitionInput;
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ method: 'GET', url: 'https://a.example/{{secret.T}}' }, 'secret_placement_not_allowed'],
      [{ method: 'POST', url: 'https://a.example/', body: ['{{secret.T}}'] }, 'secret_placement_not_allowed'],
      [
        { method: 'GET', url: 'https://a.example/', headers: { Authorization: 'Bearer sk-abc' } },
        'credential_in_definition',
      ],
      [
        { method: 'GET', url: 'https://a.example/', headers: { 'Proxy-Authorization': 'Basic eDp5' } },
        'credential_in_definition',
      ],
      [{ method: 'GET', url: 'https://a.example/', headers: { 'X-Auth-Token': 'abc' } }, 'credential_in_definition'],
      [{ method: 'GET', url: 'https://a.example/', headers: { Cookie: 'sid=1' } }, 'credential_in_definition'],
      [
        { method: 'GET', url: 'https://a.example/', headers: { Authorization: 'Bearer sk-{{secret.T}}' } },
        'credential_in_definition',
      ],
      [{ method: 'GET', url: 'https://a.example/x?a=1&access_token=abc' }, 'credential_in_definition'],
      [{ method: 'GET', url: 'https://a.example/x?Sig=abc' }, 'credential_in_definition'],
      [{ method: 'GET', url: 'https://a.example/x?password=hunter2' }, 'credential_in_definition'],
      [{ method: 'GET', url: 'https://a.example/', headers: { Authorization: 'Bearer {{secret.T}}' } }, 'ok'],
      [{ method: 'GET', url: 'https://a.example/', headers: { 'Idempotency-Key': '{{request_id}}' } }, 'ok'],
      [{ method: 'GET', url: 'https://a.example/x?token={{page_token}}&q=key' }, 'ok'],
      [{ method: 'GET', url: 'https://a.example/', headers: { Accept: 'application/json' } }, 'ok'],
    ];
    for (const [request, code] of cases)
      expect(
        codeOf(() => checkDefinition(http(request))),
        JSON.stringify(request),
      ).toBe(code);
  });
});
