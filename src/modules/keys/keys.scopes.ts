import { AppError } from '../../platform/errors.ts';
import type { Role } from '../../platform/http/context.ts';
import { type Permission, roleAllows } from '../workspaces/index.ts';

/**
 * API key scopes: a closed list, each covering some entries of the workspace permission
 * table. A key may do X only when (1) one of its scopes covers X and (2) its creator's
 * current role allows X: a key never outlives or exceeds the member who made it.
 */
export const SCOPES = [
  'gateway:invoke',
  'models:read',
  'agents:read',
  'agents:write',
  'agents:run',
  'knowledge:read',
  'knowledge:write',
  'usage:read',
  'billing:read',
  'workspace:admin',
] as const;
export type KeyScope = (typeof SCOPES)[number];

/**
 * What `workspace:admin` covers, listed one by one on purpose: a permission added to the
 * table later is not granted to existing keys until it is added here. Left out: the
 * gateway (its own scope), leaving the workspace (a person's act) and every owner-only
 * permission (owner actions stay with owners' sessions).
 */
const WORKSPACE_ADMIN: readonly Permission[] = [
  'workspace:read',
  'workspace:update',
  'members:read',
  'members:manage',
  'invitations:manage',
  'keys:read',
  'keys:manage',
  'keys:own',
  'providers:read',
  'providers:manage',
  'agents:read',
  'agents:manage',
  'agents:run',
  'tools:manage',
  'connections:manage',
  'knowledge:read',
  'knowledge:manage',
  'usage:read',
  'billing:read',
  'budgets:manage',
  'audit:read',
];

const SCOPE_PERMISSIONS: Record<KeyScope, readonly Permission[]> = {
  'gateway:invoke': ['gateway:invoke'],
  'models:read': ['providers:read'],
  'agents:read': ['agents:read'],
  'agents:write': ['agents:manage'],
  'agents:run': ['agents:run'],
  'knowledge:read': ['knowledge:read'],
  'knowledge:write': ['knowledge:manage'],
  'usage:read': ['usage:read'],
  'billing:read': ['billing:read'],
  'workspace:admin': WORKSPACE_ADMIN,
};

export const SCOPE_DESCRIPTIONS: Record<KeyScope, string> = {
  'gateway:invoke': 'Call the OpenAI-compatible gateway (every /v1 route)',
  'models:read': 'See model providers, models and routes',
  'agents:read': 'See agents and runs',
  'agents:write': 'Create and edit agents and tools',
  'agents:run': 'Start agent runs',
  'knowledge:read': 'Search knowledge bases',
  'knowledge:write': 'Upload and delete documents',
  'usage:read': 'See usage and cost',
  'billing:read': 'See balance, payments and invoices',
  'workspace:admin': 'Everything a workspace admin may do on /api (members, invitations, keys...), not owner actions',
};

export function isScope(value: string): value is KeyScope {
  return (SCOPES as readonly string[]).includes(value);
}

/** The permissions a scope covers. */
export function scopePermissions(scope: KeyScope): readonly Permission[] {
  return SCOPE_PERMISSIONS[scope];
}

/** True when one of `scopes` covers `permission` (unknown scope names cover nothing). */
export function scopesCover(scopes: readonly string[], permission: Permission): boolean {
  return scopes.some((s) => isScope(s) && SCOPE_PERMISSIONS[s].includes(permission));
}

/** True when `role` allows everything `scope` covers (a member cannot mint a billing key). */
export function roleAllowsScope(role: Role, scope: KeyScope): boolean {
  return SCOPE_PERMISSIONS[scope].every((p) => roleAllows(role, p));
}

/** Refuses scopes `role` does not allow, naming them (403 `forbidden`). */
export function assertRoleAllowsScopes(role: Role, scopes: readonly KeyScope[], whose: string): void {
  const denied = scopes.filter((s) => !roleAllowsScope(role, s));
  if (denied.length > 0) {
    throw new AppError('forbidden', `${whose} role (${role}) does not allow the scope(s): ${denied.join(', ')}.`);
  }
}

/** The 403 a key gets for an action its scopes do not cover. */
export function insufficientScope(permission: Permission): AppError {
  const needed = SCOPES.filter((s) => SCOPE_PERMISSIONS[s].includes(permission));
  const hint = needed.length > 0 ? `a scope among: ${needed.join(', ')}` : 'a session: no API key scope covers it';
  return new AppError('insufficient_scope', `This API key's scopes do not allow this (it needs ${hint}).`);
}
