import { z } from 'zod';

/** Request and response shapes of the workspace secrets API (values go in, never out). */

const Id = z.string().min(1).max(64);
export const SecretName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'letters, digits and _, not starting with a digit, up to 64')
  .describe('Referenced by tools as {{secret.NAME}}');
/** A lower-case host or `*.domain` (the same rule as an agent's `allowed_hosts`). */
export const HostPattern = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'a lower-case host or *.domain');

export const SecretsParams = z.strictObject({ workspaceId: Id });
export const SecretParams = z.strictObject({ workspaceId: Id, name: SecretName });

export const SetSecretBody = z.strictObject({
  value: z
    .string()
    .min(1)
    .max(16_384)
    .regex(/^[^\r\n\0]*$/, 'one line')
    .describe('Stored encrypted; never returned or logged'),
  allowedHosts: z
    .array(HostPattern)
    .min(1)
    .max(100)
    .describe('The only hosts the secret is ever sent to (a host, or *.domain for its sub-domains)'),
  allowedHeaders: z
    .array(z.string().regex(/^[A-Za-z0-9-]{1,100}$/, 'an HTTP header name'))
    .min(1)
    .max(20)
    .default(['authorization'])
    .describe('The only request headers the secret is ever sent in (default: authorization); never a URL or a body'),
});
/** Also what the service takes (`allowedHeaders` defaults to authorization there too). */
export type SetSecretInput = z.input<typeof SetSecretBody>;

export const SecretView = z.object({
  name: z.string(),
  allowedHosts: z.array(z.string()),
  allowedHeaders: z.array(z.string()),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type SecretView = z.infer<typeof SecretView>;
export const SecretList = z.object({ data: z.array(SecretView) });
