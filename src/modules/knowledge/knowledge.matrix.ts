import { randomBytes } from 'node:crypto';
import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { KnowledgeService } from './knowledge.service.ts';

/** What the specs use of the app. */
type KnowledgeApp = { modules: { knowledge: { service: Pick<KnowledgeService, 'createBase' | 'upload'> } } };
type Ctx = MatrixContext<KnowledgeApp>;

/**
 * Test-only: the role matrix of every knowledge route (run by knowledge.matrix.routes.test.ts,
 * read by the coverage test). Every role reads and searches knowledge bases; owners, admins
 * and members create them, upload and delete; viewers get 403. Nothing in src imports it.
 * The matrix client sends JSON only: a JSON body to the multipart upload route gets 415
 * unsupported_media_type, and a URL to a link-local address gets 400 egress_denied, both
 * past every permission check.
 */

const knowledge = (c: Ctx) => `/api/workspaces/${c.workspaceId}/knowledge`;
const uniqueName = () => `matrix-${randomBytes(5).toString('hex')}`;

/** A fresh, empty knowledge base of the owner's. */
async function ownersBase(c: Ctx) {
  const kb = await c.app.modules.knowledge.service.createBase({ scope: c.ownerScope, input: { name: uniqueName() } });
  return { kbId: kb.id };
}

/** A knowledge base of the owner's with one queued document (no worker ingests it here). */
async function ownersDocument(c: Ctx) {
  const { kbId } = await ownersBase(c);
  const marker = randomBytes(5).toString('hex');
  const { data } = await c.app.modules.knowledge.service.upload({
    scope: c.ownerScope,
    kbId,
    files: [{ filename: `${marker}.txt`, contentType: 'text/plain', bytes: Buffer.from(`Matrix note ${marker}.`) }],
  });
  const documentId = data[0]?.document.id;
  if (!documentId) throw new Error('the upload stored no document');
  return { kbId, documentId };
}

const WRITERS = ['owner', 'admin', 'member'] as const;
const READERS = ['owner', 'admin', 'member', 'viewer'] as const;

export const matrixRoutes: MatrixRoute<KnowledgeApp>[] = [
  { method: 'POST', url: knowledge, body: () => ({ name: uniqueName() }), allowed: WRITERS },
  { method: 'GET', url: knowledge, allowed: READERS },
  { method: 'GET', setup: ownersBase, url: (c) => `${knowledge(c)}/${c.vars.kbId}`, allowed: READERS },
  {
    method: 'DELETE',
    setup: ownersBase,
    fresh: true,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}`,
    allowed: WRITERS,
  },
  { method: 'GET', setup: ownersDocument, url: (c) => `${knowledge(c)}/${c.vars.kbId}/documents`, allowed: READERS },
  {
    method: 'GET',
    setup: ownersDocument,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}/documents/${c.vars.documentId}`,
    allowed: READERS,
  },
  {
    method: 'DELETE',
    setup: ownersDocument,
    fresh: true,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}/documents/${c.vars.documentId}`,
    allowed: WRITERS,
  },
  // The matrix client cannot send multipart: allowed callers get 415, past every permission check.
  {
    method: 'POST',
    setup: ownersBase,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}/documents`,
    body: () => ({ file: 'not multipart' }),
    allowed: WRITERS,
    expect: {
      owner: '415 unsupported_media_type',
      admin: '415 unsupported_media_type',
      member: '415 unsupported_media_type',
    },
  },
  // The SSRF guard refuses a link-local address: allowed callers get 400, past every permission check.
  {
    method: 'POST',
    setup: ownersBase,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}/documents/from-url`,
    body: () => ({ url: 'http://169.254.169.254/latest/meta-data' }),
    allowed: WRITERS,
    expect: { owner: '400 egress_denied', admin: '400 egress_denied', member: '400 egress_denied' },
  },
  // An empty knowledge base answers an empty list.
  {
    method: 'POST',
    setup: ownersBase,
    url: (c) => `${knowledge(c)}/${c.vars.kbId}/search`,
    body: () => ({ query: 'herons' }),
    allowed: READERS,
  },
];
