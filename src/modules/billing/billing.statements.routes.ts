import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import type { ReceiptsService } from './billing.receipts.ts';
import { DOCUMENT_CSP } from './billing.render.ts';
import { WorkspaceParams } from './billing.schemas.ts';
import {
  PaymentList,
  PaymentParams,
  PaymentsQuery,
  ReceiptView,
  StatementList,
  StatementParams,
  StatementsQuery,
  StatementView,
  UsageBreakdown,
  UsageQuery,
} from './billing.statements.schemas.ts';
import type { StatementsService } from './billing.statements.ts';

type Deps = {
  statements: StatementsService;
  receipts: ReceiptsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['billing'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

/** Statements (invoices), the usage-cost breakdown, payments and receipts: all `billing:read`. */
export function registerStatementRoutes(app: HttpServer, { statements, receipts, requirePermission }: Deps) {
  const ws = '/api/workspaces/:workspaceId/billing';
  const read = requirePermission('billing:read');

  app.get(
    `${ws}/invoices`,
    {
      schema: {
        tags,
        security,
        summary: "Monthly statements, newest first (the first page starts with the current month's draft)",
        params: WorkspaceParams,
        querystring: StatementsQuery,
        response: { 200: StatementList },
      },
      preHandler: read,
    },
    async (req) => statements.list(requireScope(req), req.query),
  );

  app.get(
    `${ws}/invoices/:period`,
    {
      schema: {
        tags,
        security,
        summary: 'The statement of a month (YYYY-MM): closed and numbered, or a draft for a month not closed yet',
        params: StatementParams,
        response: { 200: StatementView },
      },
      preHandler: read,
    },
    async (req) => statements.statement(requireScope(req), req.params.period),
  );

  app.get(
    `${ws}/invoices/:period/html`,
    {
      schema: {
        tags,
        security,
        summary: 'The statement of a month as a self-contained printable HTML page',
        params: StatementParams,
      },
      preHandler: read,
    },
    async (req, reply) => {
      const doc = await statements.document(requireScope(req), req.params.period, 'html');
      return reply.type('text/html; charset=utf-8').header('content-security-policy', DOCUMENT_CSP).send(doc.body);
    },
  );

  app.get(
    `${ws}/invoices/:period/pdf`,
    {
      schema: {
        tags,
        security,
        summary: 'The statement of a month as a PDF (application/pdf)',
        params: StatementParams,
      },
      preHandler: read,
    },
    async (req, reply) => {
      const doc = await statements.document(requireScope(req), req.params.period, 'pdf');
      return reply
        .type('application/pdf')
        .header('content-disposition', `inline; filename="${doc.filename}"`)
        .send(doc.body);
    },
  );

  app.get(
    `${ws}/usage`,
    {
      schema: {
        tags,
        security,
        summary: 'Cost and usage between two days (UTC, both included), per day, model, API key or provider',
        params: WorkspaceParams,
        querystring: UsageQuery,
        response: { 200: UsageBreakdown },
      },
      preHandler: read,
    },
    async (req) => statements.usage(requireScope(req), req.query),
  );

  app.get(
    `${ws}/payments`,
    {
      schema: {
        tags,
        security,
        summary: 'Card payments (top-ups), newest first',
        params: WorkspaceParams,
        querystring: PaymentsQuery,
        response: { 200: PaymentList },
      },
      preHandler: read,
    },
    async (req) => receipts.listPayments(requireScope(req), req.query),
  );

  app.get(
    `${ws}/payments/:paymentId/receipt`,
    {
      schema: {
        tags,
        security,
        summary: 'The receipt of a paid payment',
        params: PaymentParams,
        response: { 200: ReceiptView },
      },
      preHandler: read,
    },
    async (req) => receipts.receipt(requireScope(req), req.params.paymentId),
  );

  app.get(
    `${ws}/payments/:paymentId/receipt/html`,
    {
      schema: {
        tags,
        security,
        summary: 'The receipt of a paid payment as a printable HTML page',
        params: PaymentParams,
      },
      preHandler: read,
    },
    async (req, reply) => {
      const html = await receipts.receiptHtml(requireScope(req), req.params.paymentId);
      return reply.type('text/html; charset=utf-8').header('content-security-policy', DOCUMENT_CSP).send(html);
    },
  );
}
