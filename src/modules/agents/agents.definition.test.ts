import { describe, expect, it } from 'vitest';
import { AppError } from '../../platform/errors.ts';
import { checkDefinition, definitionText, toolSchemaProblem } from './agents.definition.ts';

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
});
