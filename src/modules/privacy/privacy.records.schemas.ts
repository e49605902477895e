import { z } from 'zod';
import { PolicySubprocessor, RetentionText } from './privacy.notice.schemas.ts';

/** The record of processing activities (Art. 30(1) GDPR), generated from the data map. */

export const ProcessingActivity = z.object({
  purpose: z.string(),
  dataCategories: z
    .array(z.object({ category: z.string(), label: z.string() }))
    .describe('Categories of personal data'),
  subjects: z.array(z.string()).describe('Categories of data subjects'),
  bases: z.array(z.string()).describe('Lawful bases'),
  recipients: z
    .array(z.string())
    .describe('Recipients the data map names and the sub-processors receiving these categories'),
  retention: z.array(RetentionText),
  tables: z.array(z.string()),
  securityMeasures: z.array(z.string()).describe('Measures specific to these categories (see also generalMeasures)'),
});
export type ProcessingActivity = z.infer<typeof ProcessingActivity>;

export const RecordOfProcessing = z.object({
  generatedAt: z.string(),
  controller: z.object({ name: z.string().nullable(), contact: z.string().nullable(), dpo: z.string().nullable() }),
  activities: z.array(ProcessingActivity),
  subprocessors: z.array(PolicySubprocessor).describe('In use or announced, with the region where each processes data'),
  generalMeasures: z.array(z.string()),
});
export type RecordOfProcessing = z.infer<typeof RecordOfProcessing>;
