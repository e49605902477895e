import { z } from 'zod';

export const WorkspaceParams = z.object({ workspaceId: z.string().min(1).max(200) });

export const AuditQuery = z.strictObject({
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  actor: z.string().min(1).max(200).optional(),
  action: z
    .string()
    .regex(/^[a-z0-9_.]+(\.\*)?$/, 'an action such as member.role_changed, or a prefix such as member.*')
    .max(100)
    .optional(),
  target: z.string().min(1).max(200).optional(),
  cursor: z.string().min(1).max(100).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
export const ExportQuery = AuditQuery.omit({ cursor: true, limit: true });

export const AuditEvent = z.object({
  id: z.string(),
  chain: z.string(),
  workspaceId: z.string().nullable(),
  seq: z.number().int(),
  occurredAt: z.string(),
  actor: z.object({
    type: z.enum(['user', 'api_key', 'system']),
    id: z.string(),
    userId: z.string().nullable(),
    ip: z.string().nullable(),
    userAgent: z.string().nullable(),
  }),
  requestId: z.string().nullable(),
  action: z.string(),
  target: z.object({ type: z.string(), id: z.string() }),
  outcome: z.enum(['success', 'failure']),
  diff: z.record(z.string(), z.unknown()).nullable(),
  prevHash: z.string(),
  hash: z.string(),
});
export type AuditEventView = z.infer<typeof AuditEvent>;

export const AuditPage = z.object({ data: z.array(AuditEvent), nextCursor: z.string().nullable() });

const Checkpoint = z.object({
  chain: z.string(),
  seq: z.number().int(),
  hash: z.string(),
  createdAt: z.string(),
  keyId: z.string(),
  signature: z.string(),
});
export type CheckpointView = z.infer<typeof Checkpoint>;
export const CheckpointReply = Checkpoint;

export const VerifyReport = z.object({
  ok: z.boolean(),
  chain: z.string(),
  checked: z.number().int(),
  firstBrokenSeq: z.number().int().nullable(),
  reason: z
    .enum([
      'hash_mismatch',
      'seq_gap',
      'prev_hash_mismatch',
      'head_mismatch',
      'checkpoint_signature_invalid',
      'checkpoint_key_unknown',
      'checkpoint_mismatch',
      'head_missing',
      'events_below_anchor',
      'chain_missing',
    ])
    .nullable(),
  message: z.string(),
  anchor: z.object({ seq: z.number().int(), hash: z.string() }),
  head: z.object({ seq: z.number().int(), hash: z.string() }),
  checkpoints: z.object({
    checked: z.number().int(),
    /** False when no signing key is configured here, so signatures could not be checked. */
    signaturesChecked: z.boolean(),
    latest: Checkpoint.nullable(),
  }),
  publicKey: z.object({ keyId: z.string(), raw: z.string() }).nullable(),
});
export type VerifyReport = z.infer<typeof VerifyReport>;

export const PublicKeyReply = z.object({
  algorithm: z.literal('Ed25519'),
  keyId: z.string(),
  /** Raw 32-byte public key, base64url. */
  publicKey: z.string(),
  pem: z.string(),
  /** What each checkpoint signature covers. */
  signedMessage: z.string(),
});
