import { afterCommit, type Database, type Db } from '../../platform/db/db.ts';
import { notFound } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import { microsToUsd } from '../../platform/money.ts';
import type { BillingNotices } from './billing.notices.ts';
import { receiptText, renderReceiptHtml } from './billing.render.ts';
import type { StatementsRepo } from './billing.statements.repo.ts';
import type { PaymentView, ReceiptView } from './billing.statements.schemas.ts';
import type { PaymentRow } from './billing.tables.ts';

/** The job that mails a payment's receipt, queued once the payment's top-up committed. */
export const RECEIPT_JOB = 'billing.send-receipt';
export type ReceiptJob = { workspaceId: string; paymentId: string };

const TAG = 'billing.receipt';

type Deps = {
  db: Pick<Db, 'tenant'>;
  repo: Pick<StatementsRepo, 'listPayments' | 'findPayment' | 'findTransactionById'>;
  notices: Pick<BillingNotices, 'send'>;
  jobs: Pick<Jobs, 'send'>;
  logger: Logger;
  workspaceName(workspaceId: string): Promise<string | null>;
  issuer: string | null;
  publicUrl: string;
};

function paymentView(p: PaymentRow): PaymentView {
  return {
    id: p.id,
    amountMicros: p.amountMicros,
    currency: p.currency,
    status: p.status,
    cardBrand: p.cardBrand,
    cardLast4: p.cardLast4,
    createdAt: p.createdAt.toISOString(),
    paidAt: p.paidAt?.toISOString() ?? null,
  };
}

/**
 * Payments and their receipts. A receipt is derived from its payment (kept 7 years) and the
 * ledger entry of its top-up, never stored apart; it is mailed once, when the payment is
 * first applied: the webhook's transaction queues the job only after it committed, and a
 * redelivered event applies nothing, so queues nothing.
 *
 * @example await receipts.receipt(scope, 'pay_01J...');
 */
export function receiptsService(deps: Deps) {
  const { db, repo } = deps;

  /** The receipt of a paid payment, and who started its checkout. */
  async function load(workspaceId: string, paymentId: string): Promise<{ receipt: ReceiptView; payer: string | null }> {
    const { payment, entry } = await db.tenant(workspaceId, async (tx) => {
      const p = await repo.findPayment(tx, workspaceId, paymentId);
      const e = p?.transactionId ? await repo.findTransactionById(tx, workspaceId, p.transactionId) : null;
      return { payment: p, entry: e };
    });
    // Only a paid payment has a receipt; a pending or expired one is not found as a receipt.
    if (payment?.status !== 'paid' || !payment.paidAt) throw notFound('receipt');
    const receipt: ReceiptView = {
      paymentId: payment.id,
      workspaceId,
      amountMicros: payment.amountMicros,
      currency: payment.currency,
      paidAt: payment.paidAt.toISOString(),
      cardBrand: payment.cardBrand,
      cardLast4: payment.cardLast4,
      transactionId: payment.transactionId,
      balanceAfterMicros: entry ? entry.availableAfterMicros : null,
    };
    return { receipt, payer: payment.createdBy };
  }

  async function context(workspaceId: string) {
    return { workspaceName: (await deps.workspaceName(workspaceId)) ?? workspaceId, issuer: deps.issuer };
  }

  return {
    /** Payments of the workspace, newest first. */
    async listPayments(scope: Scope, q: { cursor?: string | undefined; limit?: number | undefined }) {
      const limit = q.limit ?? 50;
      const rows = await db.tenant(scope.workspaceId, (tx) =>
        repo.listPayments(tx, scope.workspaceId, { after: q.cursor, limit }),
      );
      return {
        data: rows.map(paymentView),
        nextCursor: rows.length === limit ? (rows[rows.length - 1]?.id ?? null) : null,
      };
    },

    receipt: async (scope: Scope, paymentId: string) => (await load(scope.workspaceId, paymentId)).receipt,

    async receiptHtml(scope: Scope, paymentId: string): Promise<string> {
      const { receipt } = await load(scope.workspaceId, paymentId);
      return renderReceiptHtml(receipt, await context(scope.workspaceId));
    },

    /**
     * Called inside the transaction that applied a payment: once it commits, the receipt job
     * is queued (a rolled-back application queues nothing). Failing to queue is logged by tag.
     */
    paid(tx: Database, p: ReceiptJob): void {
      afterCommit(tx, async () => {
        try {
          await deps.jobs.send<ReceiptJob>(
            RECEIPT_JOB,
            { workspaceId: p.workspaceId, paymentId: p.paymentId },
            { singletonKey: p.paymentId },
          );
        } catch (err) {
          deps.logger.warn({ tag: TAG, err: (err as Error).name }, 'billing: receipt not queued');
        }
      });
    },

    /**
     * Mails the receipt to the workspace's owners and to the member who started the checkout
     * (once each). A delivery that fails is logged by tag by the notices; returns how many
     * messages were handed to the mailer.
     */
    async sendReceipt(job: ReceiptJob): Promise<number> {
      const { receipt: r, payer } = await load(job.workspaceId, job.paymentId);
      const ctx = await context(job.workspaceId);
      const url = `${deps.publicUrl.replace(/\/+$/, '')}/api/workspaces/${job.workspaceId}/billing/payments/${r.paymentId}/receipt/html`;
      return deps.notices.send({
        workspaceId: job.workspaceId,
        roles: ['owner'],
        ...(payer ? { userIds: [payer] } : {}),
        subject: `Receipt: ${microsToUsd(r.amountMicros)} USD of Berth credits`,
        text: receiptText(r, { ...ctx, url }),
        tag: TAG,
      });
    },
  };
}

export type ReceiptsService = ReturnType<typeof receiptsService>;
