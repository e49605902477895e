import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { EXPORT_BUILD_JOB, type ExportView } from './privacy.export.service.ts';

/** `berth privacy export` and `berth privacy download` in process, against a listening test app. */
const app = useTestApp();
let url: string;
let dir: string;

beforeAll(async () => {
  url = await app().http.listen({ port: 0, host: '127.0.0.1' });
  dir = mkdtempSync(path.join(tmpdir(), 'berth-export-cli-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function berth(args: string[], stdin = '') {
  return berthInProcess(args, { BERTH_URL: url }, stdin);
}

/** The emailed link, pointed at the listening server (the app's public URL is a test name). */
async function emailedLink(email: string, exportId: string): Promise<string> {
  const mails = await app().modules.notifications.service.listOutbox({ limit: 100 });
  const text = mails.find((m) => m.to === email && m.text.includes(exportId))?.text ?? '';
  const m = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(text);
  if (!m?.[1]) throw new Error('no link mailed');
  return `${url}${m[1]}`;
}

describe('happy', () => {
  it('asks for an export, waits for it, and downloads it once to a private file', async () => {
    const user = await signUp(app(), { displayName: 'Cli Person' });
    const asking = berth(['privacy', 'export', '--email', user.email, '--wait', '--json'], `${user.password}\n`);
    let settled = false;
    void asking.finally(() => {
      settled = true;
    });
    // The test app runs no workers: build what the command queued while it waits.
    while (!settled) {
      await app().jobs.drain(EXPORT_BUILD_JOB);
      await new Promise((r) => setTimeout(r, 200));
    }
    const asked = await asking;
    expect(asked.code, asked.stderr).toBe(0);
    const view = JSON.parse(asked.stdout) as ExportView;
    expect(view.status).toBe('ready');
    expect(view.kind).toBe('user');

    const link = await emailedLink(user.email, view.id);
    const file = path.join(dir, 'mine.json');
    const got = await berth(['privacy', 'download', link, '--output', file, '--json']);
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ exportId: view.id, file });
    const archive = JSON.parse(readFileSync(file, 'utf8')) as { data: { users: Array<{ email: string }> } };
    expect(archive.data.users[0]?.email).toBe(user.email);
    expect(statSync(file).mode & 0o077).toBe(0);

    const again = await berth(['privacy', 'download', link, '--output', path.join(dir, 'again.json'), '--json']);
    expect(again.code).toBe(4);
    expect(JSON.parse(again.stdout).error.code).toBe('export_link_used');
  });
});

describe('errors', () => {
  it('refuses a second export while one is prepared, and never writes over a file', async () => {
    const user = await signUp(app());
    const first = await berth(['privacy', 'export', '--email', user.email], `${user.password}\n`);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/is being prepared/);
    const second = await berth(['privacy', 'export', '--email', user.email, '--json'], `${user.password}\n`);
    expect(second.code).toBe(4);
    expect(JSON.parse(second.stdout).error.code).toBe('export_pending');

    await app().jobs.drain(EXPORT_BUILD_JOB);
    const list = await user.get<{ data: ExportView[] }>('/api/me/privacy/exports');
    const link = await emailedLink(user.email, list.body.data[0]?.id ?? '');
    const taken = path.join(dir, 'taken.json');
    writeFileSync(taken, 'keep me');
    const clash = await berth(['privacy', 'download', link, '--output', taken, '--json']);
    expect(clash.code).toBe(2);
    expect(JSON.parse(clash.stdout).error.code).toBe('output_exists');
    expect(readFileSync(taken, 'utf8')).toBe('keep me');
    // The refused command did not use the link up.
    const fresh = path.join(dir, 'fresh.json');
    expect((await berth(['privacy', 'download', link, '--output', fresh])).code).toBe(0);
    // A refused download leaves no file behind.
    const none = path.join(dir, 'none.json');
    expect((await berth(['privacy', 'download', link, '--output', none])).code).toBe(4);
    expect(existsSync(none)).toBe(false);
    expect((await berth(['privacy', 'download', 'not a link'])).code).toBe(2);
  });
});
