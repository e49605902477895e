import type { Role } from '../../platform/http/context.ts';

export type { Role };

/** Roles from most to least powerful. */
export const ROLES = ['owner', 'admin', 'member', 'viewer'] as const satisfies readonly Role[];

const ALL: readonly Role[] = ROLES;
const MANAGERS: readonly Role[] = ['owner', 'admin'];
const CONTRIBUTORS: readonly Role[] = ['owner', 'admin', 'member'];
const OWNER: readonly Role[] = ['owner'];

type PermissionRule = {
  roles: readonly Role[];
  /**
   * Still allowed when the workspace requires two-factor authentication and the member has
   * none: reading, and leaving. Everything else answers 403 `mfa_required` until the member
   * turns 2FA on (the 2FA set-up routes under /api/me are not workspace routes and stay open).
   */
  withoutMfa: boolean;
  description: string;
};

/**
 * The permission table: the one place that says which role may do what. Every workspace
 * route checks exactly one permission through `requirePermission(permission)`.
 * Later modules use the entries reserved for them below (or add theirs here).
 */
export const PERMISSIONS = {
  'workspace:read': { roles: ALL, withoutMfa: true, description: 'See the workspace' },
  'workspace:update': { roles: MANAGERS, withoutMfa: false, description: 'Rename the workspace' },
  'workspace:delete': { roles: OWNER, withoutMfa: false, description: 'Delete the workspace and all its data' },
  'security:manage': { roles: OWNER, withoutMfa: false, description: 'Require two-factor authentication' },
  'members:read': { roles: ALL, withoutMfa: true, description: 'List members and their roles' },
  'members:manage': { roles: MANAGERS, withoutMfa: false, description: 'Change roles and remove members' },
  'invitations:manage': { roles: MANAGERS, withoutMfa: false, description: 'Invite, list and revoke invitations' },
  'ownership:transfer': { roles: OWNER, withoutMfa: false, description: 'Hand ownership to another member' },
  'membership:leave': { roles: ALL, withoutMfa: true, description: 'Leave the workspace' },
  // Reserved for later modules (API keys, gateway, agents, knowledge, billing, audit, privacy).
  'keys:read': { roles: CONTRIBUTORS, withoutMfa: true, description: 'List API keys' },
  'keys:manage': { roles: MANAGERS, withoutMfa: false, description: 'Create, revoke and roll API keys' },
  'keys:own': {
    roles: CONTRIBUTORS,
    withoutMfa: false,
    description: 'Create, update, revoke and roll your own API keys (keys:manage reaches every key)',
  },
  'gateway:invoke': { roles: CONTRIBUTORS, withoutMfa: false, description: 'Call models through the gateway (/v1)' },
  'providers:read': { roles: ALL, withoutMfa: true, description: 'See model providers and routes' },
  'providers:manage': { roles: MANAGERS, withoutMfa: false, description: 'Connect providers, set routes' },
  'agents:read': { roles: ALL, withoutMfa: true, description: 'See agents and runs' },
  'agents:manage': { roles: CONTRIBUTORS, withoutMfa: false, description: 'Create and edit agents and tools' },
  'agents:run': { roles: CONTRIBUTORS, withoutMfa: false, description: 'Start agent runs' },
  'tools:manage': {
    roles: MANAGERS,
    withoutMfa: false,
    description: 'Set workspace secrets and connect MCP servers for agent tools',
  },
  'connections:manage': {
    roles: MANAGERS,
    withoutMfa: false,
    description: 'Configure OAuth providers; share connections with the workspace',
  },
  'knowledge:read': { roles: ALL, withoutMfa: true, description: 'Search knowledge bases' },
  'knowledge:manage': { roles: CONTRIBUTORS, withoutMfa: false, description: 'Upload and delete documents' },
  'usage:read': { roles: ALL, withoutMfa: true, description: 'See usage and cost' },
  'billing:read': { roles: MANAGERS, withoutMfa: true, description: 'See balance, payments and invoices' },
  'billing:manage': { roles: OWNER, withoutMfa: false, description: 'Buy credits and set up automatic top-ups' },
  'budgets:manage': { roles: MANAGERS, withoutMfa: false, description: 'Set and remove spend limits (budgets)' },
  'audit:read': { roles: MANAGERS, withoutMfa: true, description: 'Read and verify the audit log' },
  'privacy:manage': { roles: OWNER, withoutMfa: false, description: 'Export and privacy settings' },
} as const satisfies Record<string, PermissionRule>;

export type Permission = keyof typeof PERMISSIONS;

export const PERMISSION_NAMES = Object.keys(PERMISSIONS) as Permission[];

/** True when `role` grants `permission`. */
export function roleAllows(role: Role, permission: Permission): boolean {
  const rule: PermissionRule = PERMISSIONS[permission];
  return rule.roles.includes(role);
}

/** True when `permission` stays usable for members without 2FA in a workspace that requires it. */
export function allowedWithoutMfa(permission: Permission): boolean {
  const rule: PermissionRule = PERMISSIONS[permission];
  return rule.withoutMfa;
}

const RANK: Record<Role, number> = { owner: 4, admin: 3, member: 2, viewer: 1 };

/**
 * Whether `actor` may change or remove a member whose role is `target`: owners manage
 * everyone; admins manage everyone but owners. Making someone an owner takes an owner.
 */
export function canManageMember(actor: Role, target: Role, newRole?: Role): boolean {
  if (actor === 'owner') return true;
  if (!roleAllows(actor, 'members:manage')) return false;
  if (target === 'owner' || newRole === 'owner') return false;
  return RANK[actor] >= RANK[target];
}

/** Whether `actor` may invite someone with `role` (admins invite up to admin; owners too). */
export function canGrant(actor: Role, role: Role): boolean {
  if (role === 'owner') return actor === 'owner';
  return RANK[actor] >= RANK[role] && roleAllows(actor, 'invitations:manage');
}
