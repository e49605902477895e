import type { FastifyRequest } from 'fastify';
import { requestMeta } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  AuthorizeAnswer,
  AuthorizeBody,
  CallbackQuery,
  ConnectionList,
  ConnectionParams,
  ConnectionView,
  ConnectProviderParams,
  CreateOAuthProviderBody,
  DisconnectAnswer,
  OAuthProviderList,
  OAuthProviderParams,
  OAuthProviderView,
  ShareBody,
  UpdateOAuthProviderBody,
  WorkspaceParams,
} from './vault.connections.schemas.ts';
import { CALLBACK_PATH, type ConnectionsService } from './vault.connections.service.ts';

type Deps = {
  connections: ConnectionsService;
  publicUrl: string;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const tags = ['connections'];

/** OAuth providers of a workspace, connecting accounts (authorize + callback), listing, sharing, disconnecting. */
export function registerConnectionsRoutes(app: HttpServer, { connections, publicUrl, requirePermission }: Deps) {
  const ws = '/api/workspaces/:workspaceId';
  const site = publicUrl.replace(/\/+$/, '');
  const https = publicUrl.startsWith('https:');

  app.post(
    `${ws}/oauth-providers`,
    {
      schema: {
        tags,
        security,
        summary: 'Configure an OAuth 2.0 provider members can connect to (the client secret is stored encrypted)',
        params: WorkspaceParams,
        body: CreateOAuthProviderBody,
        response: { 201: OAuthProviderView },
      },
      preHandler: requirePermission('connections:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(await connections.createProvider({ scope: requireScope(req), input: req.body })),
  );

  app.get(
    `${ws}/oauth-providers`,
    {
      schema: {
        tags,
        security,
        summary: 'List OAuth providers',
        params: WorkspaceParams,
        response: { 200: OAuthProviderList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => ({ data: await connections.listProviders({ scope: requireScope(req) }) }),
  );

  app.patch(
    `${ws}/oauth-providers/:providerId`,
    {
      schema: {
        tags,
        security,
        summary: "Declare an OAuth provider's API hosts: the only hosts agent tools send its access tokens to",
        params: OAuthProviderParams,
        body: UpdateOAuthProviderBody,
        response: { 200: OAuthProviderView },
      },
      preHandler: requirePermission('connections:manage'),
    },
    async (req) =>
      connections.updateProvider({ scope: requireScope(req), providerId: req.params.providerId, input: req.body }),
  );

  app.delete(
    `${ws}/oauth-providers/:providerId`,
    {
      schema: {
        tags,
        security,
        summary: 'Remove an OAuth provider; its connections are revoked and deleted',
        params: OAuthProviderParams,
      },
      preHandler: requirePermission('connections:manage'),
    },
    async (req, reply) => {
      await connections.deleteProvider({ scope: requireScope(req), providerId: req.params.providerId });
      return reply.status(204).send();
    },
  );

  app.post(
    `${ws}/connections/:provider/authorize`,
    {
      schema: {
        tags,
        security,
        summary: "Start connecting your account at a provider: answers the provider's authorization URL",
        params: ConnectProviderParams,
        body: AuthorizeBody,
        response: { 200: AuthorizeAnswer },
      },
      preHandler: requirePermission('agents:run'),
      config: {
        audit: {
          exempt: 'starts an OAuth flow only; the connection it may create is audited when the callback stores it',
        },
      },
    },
    async (req, reply) => {
      const { cookie, ...answer } = await connections.authorize({
        scope: requireScope(req),
        provider: req.params.provider,
        input: req.body ?? {},
      });
      // Binds the flow to this browser: the callback refuses one without it. Path-limited to
      // the callback, sent on the provider's top-level redirect back (Lax).
      if (cookie) {
        reply.setCookie(cookie.name, cookie.value, {
          path: CALLBACK_PATH,
          httpOnly: true,
          sameSite: 'lax',
          secure: https,
          maxAge: cookie.maxAgeSeconds,
        });
      }
      return answer;
    },
  );

  app.get(
    CALLBACK_PATH,
    {
      schema: {
        tags,
        summary:
          'Where providers send the user back: stores the connection, then redirects to the page the flow named or answers JSON',
        querystring: CallbackQuery,
        response: { 200: ConnectionView },
      },
    },
    async (req, reply) => {
      const cookieName = req.query.state ? connections.flowCookieFor(req.query.state) : null;
      const result = await connections.callback(
        req.query,
        {
          nonce: cookieName ? (req.cookies[cookieName] ?? null) : null,
          sessionUserId: req.auth.kind === 'session' ? req.auth.userId : null,
        },
        requestMeta(req),
      );
      // The flow is over once its state is used: its cookie goes (kept while the state may still be finished).
      const refusedHere = !result.ok && ['oauth_browser_mismatch', 'oauth_user_mismatch'].includes(result.error.code);
      if (cookieName && !refusedHere) {
        reply.clearCookie(cookieName, { path: CALLBACK_PATH, httpOnly: true, sameSite: 'lax', secure: https });
      }
      if (result.redirectTo) {
        const target = new URL(`${site}${result.redirectTo}`);
        if (result.ok) target.searchParams.set('connection', result.connection.id);
        else target.searchParams.set('error', result.error.code);
        return reply.redirect(target.toString(), 303);
      }
      if (!result.ok) throw result.error;
      return result.connection;
    },
  );

  app.get(
    `${ws}/connections`,
    {
      schema: {
        tags,
        security,
        summary: "Your connections and the workspace's shared ones (never tokens)",
        params: WorkspaceParams,
        response: { 200: ConnectionList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => ({ data: await connections.listConnections({ scope: requireScope(req) }) }),
  );

  app.patch(
    `${ws}/connections/:connectionId`,
    {
      schema: {
        tags,
        security,
        summary: 'Share your connection with the workspace, or stop sharing one',
        params: ConnectionParams,
        body: ShareBody,
        response: { 200: ConnectionView },
      },
      preHandler: requirePermission('connections:manage'),
    },
    async (req) =>
      connections.setShared({
        scope: requireScope(req),
        connectionId: req.params.connectionId,
        shared: req.body.shared,
      }),
  );

  const manage = requirePermission('connections:manage');
  app.delete(
    `${ws}/connections/:connectionId`,
    {
      schema: {
        tags,
        security,
        summary:
          'Disconnect: revoke the tokens at the provider and delete them (yours, or any with connections:manage)',
        params: ConnectionParams,
        response: { 200: DisconnectAnswer },
      },
      preHandler: requirePermission('workspace:read'),
    },
    async (req) =>
      connections.disconnect({
        scope: requireScope(req),
        connectionId: req.params.connectionId,
        authorizeOthers: () => manage(req),
      }),
  );
}
