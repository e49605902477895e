import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import {
  appRoutes,
  loadMatrixSpecs,
  type MatrixRoute,
  matrixRoutePattern,
  routeShape,
  workspaceRoutes,
} from '../../../test/helpers/tenancy.ts';

/**
 * The role matrix must cover every workspace route of every module, not by convention: the
 * app's route table is read, and a route with `:workspaceId` that no module's
 * `<module>.matrix.ts` exercises fails here (so does a spec for a route that is gone).
 */
const MODULES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('security', () => {
  let app: TestApp;
  let specs: Array<{ file: string; routes: MatrixRoute[] }>;
  beforeAll(async () => {
    app = await createTestApp();
    specs = await loadMatrixSpecs(MODULES_DIR);
  });
  afterAll(async () => {
    await app.close();
  });

  it('reads the route table completely: every OpenAPI operation is in it', async () => {
    const doc = (await new TestClient(app).get<{ paths: Record<string, Record<string, unknown>> }>('/openapi.json'))
      .body;
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{([^}]+)\}/g, ':$1')}`),
    );
    expect(documented.length).toBeGreaterThan(10);
    expect(appRoutes(app)).toEqual(expect.arrayContaining(documented));
    expect(workspaceRoutes(app)).toEqual(
      expect.arrayContaining([
        'GET /api/workspaces/:workspaceId',
        'DELETE /api/workspaces/:workspaceId/members/:userId',
        'DELETE /api/workspaces/:workspaceId/invitations/:invitationId',
      ]),
    );
  });

  it('every route with :workspaceId is covered by a role-matrix spec', () => {
    const covered = new Set(specs.flatMap((s) => s.routes.map((r) => routeShape(matrixRoutePattern(r)))));
    const uncovered = workspaceRoutes(app).filter((r) => !covered.has(routeShape(r)));
    expect(uncovered, 'add a spec to src/modules/<module>/<module>.matrix.ts (see test/helpers/tenancy.ts)').toEqual(
      [],
    );
  });

  it('every spec names a route the app serves (no stale specs)', () => {
    const served = new Set(appRoutes(app).map(routeShape));
    const stale = specs.flatMap((s) =>
      s.routes.map((r) => matrixRoutePattern(r)).filter((p) => !served.has(routeShape(p))),
    );
    expect(stale).toEqual([]);
  });

  it('every matrix file is run by its matrix test', () => {
    expect(specs.map((s) => path.basename(s.file))).toContain('workspaces.matrix.ts');
    for (const { file } of specs) {
      const runner = file.replace(/\.matrix\.ts$/, '.matrix.routes.test.ts');
      expect(existsSync(runner), `${path.basename(runner)} runs ${path.basename(file)}`).toBe(true);
      expect(readFileSync(runner, 'utf8')).toContain(`./${path.basename(file)}`);
    }
  });
});
