import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { manualClock } from '../../platform/clock.ts';
import { VaultError } from './vault.crypto.ts';
import { generateKek, type Keyring, parseKeyring } from './vault.keyring.ts';
import { createVaultService } from './vault.service.ts';

let t: TestDb;
beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t.drop();
});

const clock = manualClock('2026-03-01T00:00:00Z');
const kekV1 = generateKek(1);
const kekV2 = generateKek(2);

function vault(keyring: Keyring, opts: { rotateBatchSize?: number } = {}) {
  return createVaultService({ db: t.db, keyring, clock, ...opts });
}

let n = 0;
function owner(type: 'user' | 'workspace' = 'user') {
  n += 1;
  return { type, id: `${type === 'user' ? 'usr' : 'ws'}_owner${n}_${Math.random().toString(36).slice(2)}` };
}

async function keyRows(o: { type: string; id: string }) {
  // vault_data_keys has no row-level security, so a plain query sees every row.
  return t.db.query<{ id: string; kek_version: number; wrapped_key: unknown; destroyed_at: unknown }>(
    'select id, kek_version, wrapped_key, destroyed_at from vault_data_keys where owner_type = $1 and owner_id = $2 order by id',
    [o.type, o.id],
  );
}

describe('happy', () => {
  it('round-trips a secret, creating one data key for the owner on first use', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner();
    const ctx = { owner: o, record: 'mfa_1', field: 'secret' };
    const ct = await v.encrypt(ctx, 'JBSWY3DPEHPK3PXP');
    expect(ct[0]).toBe(0x01);
    expect((await v.decrypt(ctx, ct)).toString()).toBe('JBSWY3DPEHPK3PXP');
    await v.encrypt({ ...ctx, record: 'mfa_2' }, Buffer.from([1, 2, 3]));
    const rows = await keyRows(o);
    expect(rows.length).toBe(1);
    expect(Number(rows[0]?.kek_version)).toBe(1);
    // A fresh service (empty cache, as after a restart) reads the stored key.
    expect(await vault(parseKeyring(kekV1)).decryptString(ctx, ct)).toBe('JBSWY3DPEHPK3PXP');
  });

  it('works inside the caller transaction, and a rolled back first encrypt leaves no key behind', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner('workspace');
    const ctx = { owner: o, record: 'conn_1', field: 'token' };
    await expect(
      t.db.system(async (tx) => {
        await v.encrypt(ctx, 'discarded', tx);
        throw new Error('rollback');
      }),
    ).rejects.toThrow('rollback');
    expect(await keyRows(o)).toEqual([]);
    const ct = await t.db.system((tx) => v.encrypt(ctx, 'kept', tx));
    expect((await t.db.system((tx) => v.decrypt(ctx, ct, tx))).toString()).toBe('kept');
    expect((await v.decrypt(ctx, ct)).toString()).toBe('kept');
  });

  it('two first encrypts for one owner at once share one data key', async () => {
    const o = owner();
    const a = vault(parseKeyring(kekV1));
    const b = vault(parseKeyring(kekV1));
    const ctx = { owner: o, record: 'r', field: 'f' };
    const [ca, cb] = await Promise.all([a.encrypt(ctx, 'a'), b.encrypt(ctx, 'b')]);
    expect((await keyRows(o)).length).toBe(1);
    expect((await b.decrypt(ctx, ca)).toString()).toBe('a');
    expect((await a.decrypt(ctx, cb)).toString()).toBe('b');
  });

  it('rotation: encrypt under v1, add v2, rotate, drop v1 from the keyring, still decrypt', async () => {
    const o1 = owner();
    const o2 = owner('workspace');
    const ctx1 = { owner: o1, record: 'r', field: 'f' };
    const ctx2 = { owner: o2, record: 'r', field: 'f' };
    const onV1 = vault(parseKeyring(kekV1));
    const ct1 = await onV1.encrypt(ctx1, 'one');
    const ct2 = await onV1.encrypt(ctx2, 'two');

    const both = vault(parseKeyring(`${kekV2},${kekV1}`), { rotateBatchSize: 1 });
    const first = await both.rotateKek();
    expect(first.kekVersion).toBe(2);
    expect(first.rewrapped).toBeGreaterThanOrEqual(2);
    expect(Number((await keyRows(o1))[0]?.kek_version)).toBe(2);
    expect(await both.rotateKek()).toEqual({ rewrapped: 0, kekVersion: 2 });
    const status = await both.status();
    expect(status.keys.every((k) => k.kekVersion === 2 || k.live === 0)).toBe(true);

    const onlyV2 = vault(parseKeyring(kekV2));
    expect(await onlyV2.decryptString(ctx1, ct1)).toBe('one');
    expect(await onlyV2.decryptString(ctx2, ct2)).toBe('two');
    // Data keys made after rotation are wrapped under v2 as well.
    const o3 = owner();
    await onlyV2.encrypt({ owner: o3, record: 'r', field: 'f' }, 'three');
    expect(Number((await keyRows(o3))[0]?.kek_version)).toBe(2);
  });

  it('crypto-shredding: after destroyOwnerKey the secret is unreadable and the row holds no key material', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner('workspace');
    const other = owner('workspace');
    const ctx = { owner: o, record: 'r', field: 'f' };
    const ct = await v.encrypt(ctx, 'gone soon');
    const keep = await v.encrypt({ owner: other, record: 'r', field: 'f' }, 'stays');
    expect(await v.destroyOwnerKey(o)).toEqual({ destroyed: 1 });
    await expect(v.decrypt(ctx, ct)).rejects.toMatchObject({ reason: 'key_destroyed', code: 'not_found' });
    await expect(vault(parseKeyring(kekV1)).decrypt(ctx, ct)).rejects.toBeInstanceOf(VaultError);
    const rows = await keyRows(o);
    expect(rows.length).toBe(1);
    expect(rows[0]?.wrapped_key).toBeNull();
    expect(rows[0]?.destroyed_at).not.toBeNull();
    expect(await v.destroyOwnerKey(o)).toEqual({ destroyed: 0 });
    expect(await v.decryptString({ owner: other, record: 'r', field: 'f' }, keep)).toBe('stays');
    // The owner can store new secrets under a new key; old ones stay unreadable.
    const fresh = await v.encrypt(ctx, 'new');
    expect(await v.decryptString(ctx, fresh)).toBe('new');
    await expect(v.decrypt(ctx, ct)).rejects.toMatchObject({ reason: 'key_destroyed' });
  });

  it('destroying inside a caller transaction that rolls back keeps the key', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner();
    const ctx = { owner: o, record: 'r', field: 'f' };
    const ct = await v.encrypt(ctx, 'kept');
    await expect(
      t.db.system(async (tx) => {
        await v.destroyOwnerKey(o, tx);
        throw new Error('rollback');
      }),
    ).rejects.toThrow('rollback');
    expect(await v.decryptString(ctx, ct)).toBe('kept');
  });
});

describe('errors', () => {
  it('a ciphertext moved to another record, field or owner does not decrypt', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner();
    const o2 = owner();
    const ctx = { owner: o, record: 'r1', field: 'f1' };
    const ct = await v.encrypt(ctx, 'secret');
    await v.encrypt({ owner: o2, record: 'r1', field: 'f1' }, 'x');
    await expect(v.decrypt({ ...ctx, record: 'r2' }, ct)).rejects.toMatchObject({ reason: 'authentication_failed' });
    await expect(v.decrypt({ ...ctx, field: 'f2' }, ct)).rejects.toMatchObject({ reason: 'authentication_failed' });
    await expect(v.decrypt({ ...ctx, owner: o2 }, ct)).rejects.toMatchObject({ reason: 'authentication_failed' });
  });

  it('a tampered ciphertext does not decrypt', async () => {
    const v = vault(parseKeyring(kekV1));
    const ctx = { owner: owner(), record: 'r', field: 'f' };
    const ct = await v.encrypt(ctx, 'secret');
    const bad = Buffer.from(ct);
    bad[bad.length - 20] = (bad[bad.length - 20] ?? 0) ^ 0x80;
    await expect(v.decrypt(ctx, bad)).rejects.toMatchObject({ reason: 'authentication_failed' });
  });

  it('a ciphertext naming an unknown data key answers not found', async () => {
    const v = vault(parseKeyring(kekV1));
    const ctx = { owner: owner(), record: 'r', field: 'f' };
    const ct = await v.encrypt(ctx, 'secret');
    const other = Buffer.from(ct);
    other.write('ZZZZZZ', 2 + 3 + 20, 'ascii');
    await expect(v.decrypt(ctx, other)).rejects.toMatchObject({ reason: 'key_missing', code: 'not_found' });
  });

  it('a keyring missing the version that wraps a data key fails with a message naming the version', async () => {
    const ctx = { owner: owner(), record: 'r', field: 'f' };
    const ct = await vault(parseKeyring(generateKek(7))).encrypt(ctx, 'secret');
    await expect(vault(parseKeyring(kekV2)).decrypt(ctx, ct)).rejects.toThrow(/version 7 is not in the keyring/);
  });
});

describe('security', () => {
  it('the database holds neither the plaintext nor the data key in clear', async () => {
    const v = vault(parseKeyring(kekV1));
    const o = owner();
    const marker = `canary-${Math.random().toString(36).slice(2)}`;
    const ct = await v.encrypt({ owner: o, record: 'r', field: 'f' }, marker);
    expect(ct.includes(Buffer.from(marker))).toBe(false);
    const rows = await t.db.query<{ wrapped_key: Uint8Array }>(
      'select wrapped_key from vault_data_keys where owner_id = $1',
      [o.id],
    );
    expect(Buffer.from(rows[0]?.wrapped_key ?? []).length).toBe(60);
  });
});
