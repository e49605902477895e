import type { HTTPMethods } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Logger } from '../../platform/logger.ts';
import { POLICY_CSP, renderPolicyHtml } from './privacy.notice.render.ts';
import { PolicyQuery, PolicyVersionList, PolicyView } from './privacy.notice.schemas.ts';
import type { NoticeService } from './privacy.notice.ts';

const tags = ['privacy'];

/**
 * The public privacy policy: `/privacy` (HTML) and `/api/privacy/policy` (JSON), each with
 * `?version=N` for an earlier one, and the version list. Once the server is ready, the
 * policy learns which routes exist (the rights name only those) and its current content is
 * stored as a new version when it changed.
 */
export function registerNoticeRoutes(app: HttpServer, { notice, logger }: { notice: NoticeService; logger: Logger }) {
  app.addHook('onReady', async () => {
    notice.bindRoutes((method, url) => app.hasRoute({ method: method as HTTPMethods, url }));
    try {
      await notice.current();
    } catch (err) {
      // The policy is checked again on every request for it; start-up goes on.
      logger.warn({ err: (err as Error).name }, 'privacy policy: version not checked at start');
    }
  });

  const load = (version: number | undefined) => (version === undefined ? notice.current() : notice.version(version));

  app.get(
    '/api/privacy/policy',
    {
      schema: {
        tags,
        summary: 'The privacy policy, generated from the data map (public): the current version or ?version=N',
        querystring: PolicyQuery,
        response: { 200: PolicyView },
      },
    },
    async (req) => load(req.query.version),
  );

  app.get(
    '/api/privacy/policy/versions',
    {
      schema: {
        tags,
        summary: "The privacy policy's versions, newest first, with when each took effect (public)",
        response: { 200: PolicyVersionList },
      },
    },
    async () => ({ data: await notice.versions() }),
  );

  app.get(
    '/privacy',
    {
      schema: {
        tags,
        summary: 'The privacy policy as a page (public): the current version or ?version=N',
        querystring: PolicyQuery,
      },
    },
    async (req, reply) => {
      const shown = await load(req.query.version);
      const versions = await notice.versions();
      return reply
        .type('text/html; charset=utf-8')
        .header('content-security-policy', POLICY_CSP)
        .send(renderPolicyHtml(shown, versions));
    },
  );
}
