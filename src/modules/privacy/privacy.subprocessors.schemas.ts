import { z } from 'zod';
import { singleLineText } from '../../platform/http/schemas.ts';

/**
 * Request and response shapes of the sub-processor registry. Categories are checked against
 * the data map by the service (400 `unknown_data_category`), the notice period too (400
 * `notice_period_too_short`), so the schemas only bound their size.
 */

const Id = z.string().min(1).max(64);

/** Free text over several lines: no control characters but line breaks and tabs (Postgres refuses NUL). */
export function multiLineText(max: number) {
  return z
    .string()
    .trim()
    .min(1)
    .max(max)
    .refine((v) => !/\p{Cc}/u.test(v.replace(/[\n\r\t]/g, '')), 'no control characters other than line breaks and tabs')
    .describe(`1 to ${max} characters`);
}

export const DataCategories = z
  .array(z.string().min(1).max(40))
  .min(1)
  .max(20)
  .describe("Data map categories (see `categories` in GET /api/privacy/policy), e.g. ['account', 'communication']");

export const RegisterSubprocessorBody = z.strictObject({
  name: singleLineText(1, 200),
  purpose: singleLineText(1, 1000),
  dataCategories: DataCategories,
  region: singleLineText(1, 200).describe('Where it processes the data, e.g. "EU (Frankfurt)" or "United States"'),
  effectiveAt: z.iso
    .datetime({ offset: true })
    .describe('When it starts processing: at least 30 days after now (the notice owners get)'),
  replaces: Id.optional().describe('The id of the sub-processor this one replaces (retired when this one starts)'),
});
export type RegisterSubprocessorInput = z.infer<typeof RegisterSubprocessorBody>;

export const SUBPROCESSOR_STATUSES = ['announced', 'active', 'replaced', 'retired'] as const;

export const SubprocessorView = z.object({
  id: z.string(),
  name: z.string(),
  purpose: z.string(),
  dataCategories: z.array(z.string()),
  region: z.string(),
  noticeAt: z.string().describe('When workspace owners were notified (registration)'),
  effectiveAt: z.string(),
  status: z
    .enum(SUBPROCESSOR_STATUSES)
    .describe('announced until effectiveAt, then active; replaced or retired from retiredAt'),
  replaces: z.string().nullable(),
  replacedBy: z.string().nullable(),
  retiredAt: z.string().nullable(),
});
export type SubprocessorView = z.infer<typeof SubprocessorView>;
export const SubprocessorList = z.object({ data: z.array(SubprocessorView) });

export const OperatorSubprocessorView = SubprocessorView.extend({
  noticesSent: z.number().int().describe('Owners the notice was sent to'),
  noticesDone: z.boolean().describe('Every owner at registration has been sent the notice'),
  objections: z.number().int(),
});
export type OperatorSubprocessorView = z.infer<typeof OperatorSubprocessorView>;
export const OperatorSubprocessorList = z.object({ data: z.array(OperatorSubprocessorView) });

export const SubprocessorParams = z.strictObject({ subprocessorId: Id });
export const WorkspaceSubprocessorParams = z.strictObject({ workspaceId: Id, subprocessorId: Id });

export const ObjectionBody = z.strictObject({ reason: multiLineText(2000).optional() });

export const ObjectionView = z.object({
  workspaceId: z.string(),
  subprocessorId: z.string(),
  userId: z.string().nullable().describe('The owner who objected (null once their account is erased)'),
  reason: z.string().nullable(),
  createdAt: z.string(),
});
export type ObjectionView = z.infer<typeof ObjectionView>;
export const ObjectionList = z.object({ data: z.array(ObjectionView) });
export const ObjectionsQuery = z.strictObject({ subprocessorId: Id.optional() });
