import { describe, expect, it } from 'vitest';
import { FEATURE_PATTERN, featureNames, routeKey } from './analytics.features.ts';

const routes = [
  { method: 'POST', url: '/api/workspaces' },
  { method: 'GET', url: '/api/workspaces' },
  { method: 'GET', url: '/api/workspaces/:workspaceId' },
  { method: 'POST', url: '/api/workspaces/:workspaceId/keys' },
  { method: 'GET', url: '/api/workspaces/:workspaceId/keys' },
  { method: 'HEAD', url: '/api/workspaces/:workspaceId/keys' },
  { method: 'GET', url: '/api/workspaces/:workspaceId/keys/:keyId' },
  { method: 'PATCH', url: '/api/workspaces/:workspaceId/keys/:keyId' },
  { method: 'POST', url: '/api/workspaces/:workspaceId/keys/:keyId/revoke' },
  { method: 'POST', url: '/api/workspaces/:workspaceId/leave' },
  { method: 'POST', url: '/api/workspaces/:workspaceId/transfer-ownership' },
  { method: 'PUT', url: '/api/workspaces/:workspaceId/routes' },
  { method: 'DELETE', url: '/api/workspaces/:workspaceId/routes/:alias' },
  { method: 'GET', url: '/api/me' },
  { method: 'POST', url: '/api/auth/login' },
  { method: 'POST', url: '/v1/chat/completions' },
  { method: 'POST', url: '/v1/messages' },
  { method: 'GET', url: '/v1/models' },
  { method: 'GET', url: '/v1/models/:model' },
  { method: 'GET', url: '/healthz' },
  { method: 'GET', url: '/privacy' },
];

describe('happy', () => {
  it('names each /api and /v1 route by what it does, without ids', () => {
    const names = featureNames(routes);
    const name = (method: string, url: string) => names.get(routeKey(method, url));
    expect(name('POST', '/api/workspaces')).toBe('workspaces.create');
    expect(name('GET', '/api/workspaces')).toBe('workspaces.list');
    expect(name('GET', '/api/workspaces/:workspaceId')).toBe('workspaces.get');
    expect(name('POST', '/api/workspaces/:workspaceId/keys')).toBe('keys.create');
    expect(name('GET', '/api/workspaces/:workspaceId/keys')).toBe('keys.list');
    expect(name('GET', '/api/workspaces/:workspaceId/keys/:keyId')).toBe('keys.get');
    expect(name('PATCH', '/api/workspaces/:workspaceId/keys/:keyId')).toBe('keys.update');
    expect(name('POST', '/api/workspaces/:workspaceId/keys/:keyId/revoke')).toBe('keys.revoke');
    expect(name('POST', '/api/workspaces/:workspaceId/leave')).toBe('workspaces.leave');
    expect(name('POST', '/api/workspaces/:workspaceId/transfer-ownership')).toBe('workspaces.transfer_ownership');
    expect(name('PUT', '/api/workspaces/:workspaceId/routes')).toBe('routes.set');
    expect(name('DELETE', '/api/workspaces/:workspaceId/routes/:alias')).toBe('routes.delete');
    expect(name('GET', '/api/me')).toBe('me.get');
    expect(name('POST', '/api/auth/login')).toBe('auth.login');
    expect(name('POST', '/v1/chat/completions')).toBe('gateway.chat');
    expect(name('POST', '/v1/messages')).toBe('gateway.messages');
    expect(name('GET', '/v1/models')).toBe('gateway.models.list');
    expect(name('GET', '/v1/models/:model')).toBe('gateway.models.get');
  });

  it('counts no HEAD requests and nothing outside /api and /v1', () => {
    const names = featureNames(routes);
    expect(names.has(routeKey('HEAD', '/api/workspaces/:workspaceId/keys'))).toBe(false);
    expect(names.has(routeKey('GET', '/healthz'))).toBe(false);
    expect(names.has(routeKey('GET', '/privacy'))).toBe(false);
    for (const n of names.values()) expect(n).toMatch(FEATURE_PATTERN);
  });
});
