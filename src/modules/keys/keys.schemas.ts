import { z } from 'zod';
import { SCOPE_DESCRIPTIONS, SCOPES } from './keys.scopes.ts';

/** Request and response shapes of the API keys API (they are also the OpenAPI document). */

export const MAX_GRACE_SECONDS = 30 * 24 * 3600;
export const DEFAULT_GRACE_SECONDS = 24 * 3600;

const Id = z.string().min(1).max(64);
export const ScopeSchema = z.enum(SCOPES).describe(
  Object.entries(SCOPE_DESCRIPTIONS)
    .map(([s, d]) => `${s}: ${d}`)
    .join('; '),
);

const Name = z.string().trim().min(1).max(100).describe('1 to 100 characters');
const Scopes = z
  .array(ScopeSchema)
  .min(1)
  .max(SCOPES.length)
  .refine((a) => new Set(a).size === a.length, 'each scope once');
const ModelName = z.string().trim().min(1).max(200);
const Limit = z.number().int().min(1).max(1_000_000_000);
const Cidrs = z.array(z.string().trim().min(2).max(64)).min(1).max(100).describe('IPv4 or IPv6 CIDR ranges');

/** Settings shared by create and update; `null` clears an optional setting on update. */
const Settings = {
  allowedModels: z.array(ModelName).min(1).max(200).nullable().describe('Models the key may call; null = any'),
  rateLimitRpm: Limit.nullable().describe('Requests per minute (enforced by the gateway); null = none'),
  rateLimitTpm: Limit.nullable().describe('Tokens per minute (enforced by the gateway); null = none'),
  spendLimitMicros: z
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .nullable()
    .describe('Spend cap in micro-units of the billing currency; with spendLimitPeriod'),
  spendLimitPeriod: z.enum(['day', 'month']).nullable(),
  ipAllowlist: Cidrs.nullable().describe('Only these networks may use the key; null = any'),
  expiresAt: z.iso.datetime({ offset: true }).nullable().describe('When the key stops working; null = never'),
};

export const KeyParams = z.strictObject({ workspaceId: Id, keyId: Id });
export const WorkspaceKeysParams = z.strictObject({ workspaceId: Id });

export const CreateKeyBody = z.strictObject({
  name: Name,
  scopes: Scopes,
  allowedModels: Settings.allowedModels.optional(),
  rateLimitRpm: Settings.rateLimitRpm.optional(),
  rateLimitTpm: Settings.rateLimitTpm.optional(),
  spendLimitMicros: Settings.spendLimitMicros.optional(),
  spendLimitPeriod: Settings.spendLimitPeriod.optional(),
  ipAllowlist: Settings.ipAllowlist.optional(),
  expiresAt: Settings.expiresAt.optional(),
});
export type CreateKeyInput = z.infer<typeof CreateKeyBody>;

export const UpdateKeyBody = z
  .strictObject({
    name: Name.optional(),
    scopes: Scopes.optional(),
    allowedModels: Settings.allowedModels.optional(),
    rateLimitRpm: Settings.rateLimitRpm.optional(),
    rateLimitTpm: Settings.rateLimitTpm.optional(),
    spendLimitMicros: Settings.spendLimitMicros.optional(),
    spendLimitPeriod: Settings.spendLimitPeriod.optional(),
    ipAllowlist: Settings.ipAllowlist.optional(),
    expiresAt: Settings.expiresAt.optional(),
  })
  .refine((b) => Object.keys(b).length > 0, 'change at least one setting');
export type UpdateKeyInput = z.infer<typeof UpdateKeyBody>;

export const RollKeyBody = z.strictObject({
  gracePeriodSeconds: z
    .number()
    .int()
    .min(0)
    .max(MAX_GRACE_SECONDS)
    .optional()
    .describe('How long the old secret keeps working (default 86400 = 24 h; 0 = stops now; at most 30 days)'),
});

const SecretView = z.object({
  id: z.string(),
  prefix: z.string().describe('`brt_live_` and the first 4 random characters'),
  last4: z.string(),
  createdAt: z.string(),
  expiresAt: z.string().nullable().describe('Set on the old secret when the key is rolled'),
});

export const KeyView = z.object({
  id: z.string(),
  name: z.string(),
  prefix: z.string().describe("The newest secret's prefix"),
  last4: z.string(),
  status: z.enum(['active', 'expired', 'revoked']),
  scopes: z.array(z.string()),
  allowedModels: z.array(z.string()).nullable(),
  rateLimitRpm: z.number().nullable(),
  rateLimitTpm: z.number().nullable(),
  spendLimitMicros: z.number().nullable(),
  spendLimitPeriod: z.enum(['day', 'month']).nullable(),
  ipAllowlist: z.array(z.string()).nullable(),
  expiresAt: z.string().nullable(),
  createdBy: z.string().describe('The member whose rights the key carries'),
  createdAt: z.string(),
  updatedAt: z.string(),
  lastUsedAt: z.string().nullable().describe('To the minute'),
  revokedAt: z.string().nullable(),
  revokedBy: z.string().nullable(),
  secrets: z.array(SecretView).describe('Secrets that still work: the newest, and rolled ones in their grace period'),
});
export type KeyView = z.infer<typeof KeyView>;

export const KeyList = z.object({ data: z.array(KeyView) });
export const KeyWithSecret = z.object({
  key: KeyView,
  secret: z.string().describe('The API key itself: shown this once, store it now'),
});
export type KeyWithSecret = z.infer<typeof KeyWithSecret>;

export const SelfView = z.object({
  id: z.string(),
  name: z.string(),
  workspaceId: z.string(),
  scopes: z.array(z.string()),
  createdBy: z.string(),
  expiresAt: z.string().nullable(),
});
export type SelfView = z.infer<typeof SelfView>;
