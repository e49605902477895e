import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import { DAY } from '../../platform/clock.ts';
import { columnPolicies } from '../../platform/db/datamap.ts';
import { escapeHtml, POLICY_CSP } from './privacy.notice.render.ts';
import type { PolicyVersionSummary, PolicyView } from './privacy.notice.schemas.ts';
import { categoryText, describeRetention } from './privacy.notice.text.ts';
import type { RecordOfProcessing } from './privacy.records.schemas.ts';

/**
 * The privacy policy and the record of processing are generated from the data map: every
 * category and purpose the map declares appears, operator-provided text is escaped, a new
 * version is stored exactly when the content changes, and old versions stay readable.
 */

const CONTROLLER = 'Acme <script>alert(1)</script> & "Sons" Ltd';
const CONTACT = "privacy@acme.example <img src=x onerror='x'>";

let app: TestApp;
let anon: TestClient;
let op: SignedInClient;

beforeAll(async () => {
  app = await createTestApp({
    config: { BERTH_PRIVACY_CONTROLLER: CONTROLLER, BERTH_PRIVACY_CONTACT: CONTACT, BERTH_PRIVACY_DPO: 'Jo DPO' },
  });
  anon = new TestClient(app);
  op = await signUp(app);
  await makeOperator(app, op.userId);
});
afterAll(async () => {
  await app?.close();
});

const policies = () => columnPolicies(dataMap(app.modules));
/** What the data map names as the recipient of payments. */
const paymentRecipient = () => {
  const r = dataMap(app.modules).find((t) => t.table === 'payments')?.recipients?.[0];
  if (!r) throw new Error('the data map names no recipient of payments');
  return r;
};

async function registerSubprocessor(name: string) {
  return app.modules.privacy.service.subprocessors.register({
    actor: { type: 'system', name: 'test' },
    input: {
      name,
      purpose: 'Stores <backups> & snapshots',
      dataCategories: ['account'],
      region: 'EU',
      effectiveAt: new Date(app.clock.now().getTime() + 31 * DAY).toISOString(),
    },
  });
}

describe('happy', () => {
  it('renders every category and purpose of the data map, escaped, on a page without scripts', async () => {
    const res = await anon.get('/privacy');
    expect(res.status).toBe(200);
    expect(String(res.headers['content-type'])).toContain('text/html');
    expect(res.headers['content-security-policy']).toBe(POLICY_CSP);
    const html = res.text;
    const all = policies();
    expect(all.length).toBeGreaterThan(50);
    for (const purpose of new Set(all.map((p) => p.purpose))) expect(html, purpose).toContain(escapeHtml(purpose));
    for (const category of new Set(all.map((p) => p.category))) {
      expect(html).toContain(`${escapeHtml(categoryText(category).label)} <span class="muted">(${category})</span>`);
    }
    for (const c of new Set(all.map((p) => p.retention))) expect(html).toContain(escapeHtml(describeRetention(c)));
    expect(paymentRecipient()).toContain('Payment processor');
    expect(html).toContain(escapeHtml(paymentRecipient()));
  });

  it('escapes the operator’s settings', async () => {
    const html = (await anon.get('/privacy')).text;
    expect(html).toContain('Acme &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Sons&quot; Ltd');
    expect(html).toContain('privacy@acme.example &lt;img src=x onerror=&#39;x&#39;&gt;');
    expect(html).not.toContain('<script');
    expect(html).not.toContain('<img');
    expect(html).toContain('Jo DPO');
  });

  it('answers the same policy as JSON: categories, purposes, bases, retention, recipients, rights', async () => {
    const res = await anon.get<PolicyView>('/api/privacy/policy');
    expect(res.status).toBe(200);
    const doc = res.body.policy;
    const all = policies();
    expect(doc.controller).toEqual({ name: CONTROLLER, contact: CONTACT, dpo: 'Jo DPO' });
    expect(new Set(doc.categories.map((c) => c.category))).toEqual(new Set(all.map((p) => p.category)));
    expect(new Set(doc.processing.map((p) => p.purpose))).toEqual(new Set(all.map((p) => p.purpose)));
    for (const p of all.filter((x) => x.personal)) {
      const entry = doc.processing.find((e) => e.purpose === p.purpose);
      expect(entry?.personal, p.purpose).toBe(true);
      expect(entry?.bases).toContain(p.basis);
      expect(entry?.retention.map((r) => r.class)).toContain(p.retention);
    }
    expect(new Set(doc.retention.map((r) => r.class))).toEqual(new Set(all.map((p) => p.retention)));
    expect(doc.retention.every((r) => r.text.length > 10)).toBe(true);
    expect(doc.recipients).toContain(paymentRecipient());
    const payments = doc.processing.find((p) => p.tables.includes('payments'));
    expect(payments?.recipients).toContain(paymentRecipient());
    // The rights name only routes this installation serves.
    const objection = doc.rights.find((r) => r.right === 'objection');
    expect(objection?.how).toContain(
      'POST /api/workspaces/{id}/subprocessors/{subprocessorId}/objection (workspace owners)',
    );
    expect(doc.rights.find((r) => r.right === 'erasure')?.how).toContain(
      'DELETE /api/workspaces/{id}: delete a workspace you own',
    );
    expect(doc.rights.find((r) => r.right === 'complaint')?.how).toEqual([]);
  });

  it('stores a new version when the content changes, and only then; old versions stay readable', async () => {
    const first = (await anon.get<PolicyView>('/api/privacy/policy')).body;
    expect((await anon.get<PolicyView>('/api/privacy/policy')).body.version).toBe(first.version);

    const sub = await registerSubprocessor('Backup & <Co>');
    const second = (await anon.get<PolicyView>('/api/privacy/policy')).body;
    expect(second.version).toBe(first.version + 1);
    expect(second.contentHash).not.toBe(first.contentHash);
    expect(second.policy.subprocessors.map((s) => s.id)).toEqual([sub.id]);
    expect(new Date(second.effectiveAt).getTime()).toBe(app.clock.now().getTime());

    const versions = (await anon.get<{ data: PolicyVersionSummary[] }>('/api/privacy/policy/versions')).body.data;
    expect(versions.map((v) => [v.version, v.current])).toEqual([
      [second.version, true],
      [first.version, false],
    ]);

    const old = await anon.get<PolicyView>(`/api/privacy/policy?version=${first.version}`);
    expect(old.body).toEqual(first);
    const oldPage = await anon.get(`/privacy?version=${first.version}`);
    expect(oldPage.status).toBe(200);
    expect(oldPage.text).not.toContain('Backup &amp; &lt;Co&gt;');
    expect(oldPage.text).toContain(`Version ${second.version}</a>`);
    const page = (await anon.get('/privacy')).text;
    expect(page).toContain('Backup &amp; &lt;Co&gt;');
    expect(page).toContain('Stores &lt;backups&gt; &amp; snapshots');
    expect(page).not.toContain('<backups>');

    // Retiring it changes the content again: a third version.
    await app.modules.privacy.service.subprocessors.retire({
      actor: { type: 'system', name: 'test' },
      subprocessorId: sub.id,
    });
    expect((await anon.get<PolicyView>('/api/privacy/policy')).body.version).toBe(second.version + 1);
  });
});

describe('record of processing', () => {
  it('lists every purpose with personal data, with its categories, people, basis, recipients, retention and measures', async () => {
    const sub = await registerSubprocessor('Records Backup');
    const res = await op.get<RecordOfProcessing>('/api/operator/privacy/records');
    expect(res.status).toBe(200);
    const personal = policies().filter((p) => p.personal);
    expect(new Set(res.body.activities.map((a) => a.purpose))).toEqual(new Set(personal.map((p) => p.purpose)));
    for (const p of personal) {
      const a = res.body.activities.find((x) => x.purpose === p.purpose);
      expect(a?.dataCategories.map((c) => c.category)).toContain(p.category);
      expect(a?.bases).toContain(p.basis);
      expect(a?.retention.map((r) => r.class)).toContain(p.retention);
      expect(a?.subjects.length).toBeGreaterThan(0);
    }
    const withAccount = res.body.activities.filter((a) => a.dataCategories.some((c) => c.category === 'account'));
    expect(withAccount.length).toBeGreaterThan(0);
    for (const a of withAccount) expect(a.recipients).toContain('Records Backup (sub-processor, EU)');
    const credentials = res.body.activities.find((a) => a.dataCategories.some((c) => c.category === 'credential'));
    expect(credentials?.securityMeasures.join(' ')).toContain('Argon2id');
    expect(res.body.generalMeasures.length).toBeGreaterThan(2);
    expect(res.body.subprocessors.map((s) => s.id)).toContain(sub.id);
    expect(res.body.controller.name).toBe(CONTROLLER);
  });

  it('is for operators only', async () => {
    const user = await signUp(app);
    expect((await user.get('/api/operator/privacy/records')).status).toBe(403);
    expect((await anon.get('/api/operator/privacy/records')).status).toBe(401);
  });
});

describe('errors', () => {
  it('answers 404 for a version that does not exist and 400 for one that is not a number', async () => {
    const missing = await anon.get('/api/privacy/policy?version=9999');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'not_found' });
    expect((await anon.get('/privacy?version=9999')).status).toBe(404);
    const bad = await anon.get('/api/privacy/policy?version=first');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'validation_failed' });
  });
});
