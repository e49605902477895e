import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpServer, type HttpServer } from '../../platform/http/server.ts';
import { createLogger } from '../../platform/logger.ts';
import { createAccessControl, requireScope } from './workspaces.access.ts';

/**
 * Wiring mistakes in a workspace route fail closed with a 4xx and a stable code, never open
 * and never as a 500: a route that forgot `requirePermission`, or uses it without `:workspaceId`.
 */
describe('security', () => {
  let http: HttpServer;
  const logs: string[] = [];
  beforeAll(async () => {
    const logger = createLogger({ level: 'debug', destination: { write: (l: string) => logs.push(l) } });
    http = await createHttpServer({
      logger,
      bodyLimit: 1024,
      trustProxy: false,
      publicUrl: 'http://berth.test',
      version: 'test',
      sessionCookieName: 'berth_session',
    });
    const access = createAccessControl({ resolveMembership: async () => ({ role: 'owner', requireMfa: false }) });
    http.get('/api/workspaces/:workspaceId/forgot-the-hook', async (req) => ({ scope: requireScope(req) }));
    http.get('/api/no-workspace', { preHandler: access.requirePermission('workspace:read') }, async () => ({
      ok: true,
    }));
    await http.ready();
  });
  afterAll(async () => {
    await http.close();
  });

  it('a workspace route without requirePermission answers 403 forbidden and logs the mistake', async () => {
    const res = await http.inject({ method: 'GET', url: '/api/workspaces/ws_1/forgot-the-hook' });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ code: 'forbidden' });
    expect(logs.join('\n')).toContain('without a requirePermission hook');
  });

  it('requirePermission on a route without :workspaceId answers 404 not_found and logs the mistake', async () => {
    const res = await http.inject({ method: 'GET', url: '/api/no-workspace' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'not_found' });
    expect(logs.join('\n')).toContain('requirePermission on a route without :workspaceId');
  });

  it('refuses to replace the session resolver', () => {
    const access = createAccessControl({ resolveMembership: async () => null });
    expect(() => access.registerResolver('session', async () => null)).toThrow();
  });
});
