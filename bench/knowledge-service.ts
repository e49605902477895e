import type { Embed } from '../src/modules/knowledge/knowledge.embed.ts';
import { knowledgeRepo } from '../src/modules/knowledge/knowledge.repo.ts';
import { knowledgeService } from '../src/modules/knowledge/knowledge.service.ts';
import { detectVectorMode, ExactVectors, type VectorMode } from '../src/modules/knowledge/knowledge.vectors.ts';
import { createVaultService, generateKek, parseKeyring } from '../src/modules/vault/index.ts';
import { systemClock } from '../src/platform/clock.ts';
import type { Db } from '../src/platform/db/db.ts';
import { AppError } from '../src/platform/errors.ts';
import { createLogger } from '../src/platform/logger.ts';

/**
 * The knowledge service as the benchmarks drive it: the real repo, database and vault (a
 * throwaway key: originals are encrypted and decrypted as in the app), `embed` for the
 * embeddings model `model`; ingestion is called directly, so the queue's sends are dropped;
 * audit rows (no content, not what is measured) are not written; no fetch, no rerank.
 */
export function benchKnowledgeService(db: Db, embed: Embed, model: string, exactCacheBytes = 1024 * 1024 * 1024) {
  let vectorMode: Promise<VectorMode> | undefined;
  return knowledgeService({
    db,
    repo: knowledgeRepo,
    clock: systemClock,
    logger: createLogger({ level: 'silent' }),
    jobs: { send: async () => null },
    vault: createVaultService({ db, keyring: parseKeyring(generateKek()), clock: systemClock }),
    audit: { record: async () => undefined },
    fetchUrl: async () => {
      throw new Error('the benchmarks upload files, not URLs');
    },
    embed,
    complete: async () => {
      throw new AppError('rerank_unavailable', 'The benchmarks do not rerank.');
    },
    models: async () => [model],
    vectorMode: () => {
      vectorMode ??= db.system((tx) => detectVectorMode(tx));
      return vectorMode;
    },
    exact: new ExactVectors(exactCacheBytes),
  });
}
