import { z } from 'zod';

/**
 * The privacy policy as data: what `GET /api/privacy/policy` answers and what `/privacy`
 * renders. Built from the data map, the registered sub-processors and the operator's
 * settings; each published version is stored as this document.
 */

export const PolicyCategory = z.object({
  category: z.string().describe('A data map category (account, credential, usage_metadata, ...)'),
  label: z.string(),
  description: z.string(),
  personal: z.boolean().describe('Some column of this category holds personal data'),
});

export const RetentionText = z.object({ class: z.string(), text: z.string() });

export type PolicyProcessing = z.infer<typeof PolicyProcessing>;
export const PolicyProcessing = z.object({
  purpose: z.string(),
  categories: z.array(z.string()),
  personal: z.boolean().describe('Personal data is processed for this purpose'),
  bases: z.array(z.string()).describe('Lawful bases (contract, legitimate_interest, legal_obligation, consent)'),
  retention: z.array(RetentionText),
  recipients: z.array(z.string()),
  tables: z.array(z.string()),
});

export type PolicySubprocessor = z.infer<typeof PolicySubprocessor>;
export const PolicySubprocessor = z.object({
  id: z.string(),
  name: z.string(),
  purpose: z.string(),
  dataCategories: z.array(z.string()),
  region: z.string(),
  effectiveAt: z.string(),
  retiredAt: z.string().nullable(),
});

export const PolicyRight = z.object({
  right: z.string(),
  description: z.string(),
  how: z.array(z.string()).describe('Routes and commands that exercise the right on this installation'),
});

export const PolicyDocument = z.object({
  format: z.literal(1),
  controller: z.object({
    name: z.string().nullable(),
    contact: z.string().nullable(),
    dpo: z.string().nullable(),
  }),
  categories: z.array(PolicyCategory),
  processing: z.array(PolicyProcessing),
  bases: z.array(z.object({ basis: z.string(), text: z.string() })),
  retention: z.array(RetentionText),
  recipients: z.array(z.string()).describe('Recipients the data map names (besides the sub-processors)'),
  subprocessors: z.array(PolicySubprocessor),
  rights: z.array(PolicyRight),
});
export type PolicyDocument = z.infer<typeof PolicyDocument>;

export const PolicyView = z.object({
  version: z.number().int(),
  effectiveAt: z.string(),
  contentHash: z.string(),
  policy: PolicyDocument,
});
export type PolicyView = z.infer<typeof PolicyView>;

export const PolicyVersionSummary = PolicyView.omit({ policy: true }).extend({ current: z.boolean() });
export const PolicyVersionList = z.object({ data: z.array(PolicyVersionSummary) });
export type PolicyVersionSummary = z.infer<typeof PolicyVersionSummary>;

export const PolicyQuery = z.strictObject({
  version: z.coerce
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .optional()
    .describe('An earlier version (default: the current one)'),
});
