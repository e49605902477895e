/**
 * The shipped model catalog: list prices per million tokens in integer micro-units of the
 * platform currency (USD), with context windows. Operators override it with
 * `BERTH_MODEL_PRICES_FILE`; workspaces with their own prices (`berth models price`).
 * Bump CATALOG_VERSION whenever a price changes, so usage reports can say which table
 * priced a call.
 */
export const CATALOG_VERSION = '2026-11-01';

export type ModelPrice = {
  inputMicrosPerMtok: number;
  outputMicrosPerMtok: number;
  /** Price of prompt tokens served from the provider's cache; the input price when absent. */
  cachedInputMicrosPerMtok: number | null;
  contextWindow: number | null;
};

type Entry = [input: number, output: number, cachedInput: number | null, contextWindow: number];

/** Dollars per million tokens as written on price pages; converted to micro-units below. */
const LIST_PRICES: Record<string, Entry> = {
  'gpt-4o': [2.5, 10, 1.25, 128_000],
  'gpt-4o-mini': [0.15, 0.6, 0.075, 128_000],
  'gpt-4.1': [2, 8, 0.5, 1_047_576],
  'gpt-4.1-mini': [0.4, 1.6, 0.1, 1_047_576],
  'gpt-4.1-nano': [0.1, 0.4, 0.025, 1_047_576],
  'gpt-5': [1.25, 10, 0.125, 400_000],
  'gpt-5-mini': [0.25, 2, 0.025, 400_000],
  'gpt-5-nano': [0.05, 0.4, 0.005, 400_000],
  o3: [2, 8, 0.5, 200_000],
  'o3-mini': [1.1, 4.4, 0.55, 200_000],
  'o4-mini': [1.1, 4.4, 0.275, 200_000],
  'text-embedding-3-small': [0.02, 0, null, 8_191],
  'text-embedding-3-large': [0.13, 0, null, 8_191],
  'claude-opus-4-1': [15, 75, 1.5, 200_000],
  'claude-opus-4': [15, 75, 1.5, 200_000],
  'claude-sonnet-4-5': [3, 15, 0.3, 200_000],
  'claude-sonnet-4': [3, 15, 0.3, 200_000],
  'claude-haiku-4-5': [1, 5, 0.1, 200_000],
  'claude-3-7-sonnet': [3, 15, 0.3, 200_000],
  'claude-3-5-haiku': [0.8, 4, 0.08, 200_000],
  'gemini-2.5-pro': [1.25, 10, 0.31, 1_048_576],
  'gemini-2.5-flash': [0.3, 2.5, 0.075, 1_048_576],
  'deepseek-chat': [0.27, 1.1, 0.07, 64_000],
  'deepseek-reasoner': [0.55, 2.19, 0.14, 64_000],
  'mistral-large-latest': [2, 6, null, 128_000],
  'mistral-small-latest': [0.1, 0.3, null, 32_000],
  'llama-3.3-70b-versatile': [0.59, 0.79, null, 128_000],
  'llama-3.1-8b-instant': [0.05, 0.08, null, 128_000],
};

const micros = (usd: number) => Math.round(usd * 1_000_000);

export const SHIPPED_PRICES: ReadonlyMap<string, ModelPrice> = new Map(
  Object.entries(LIST_PRICES).map(([model, [input, output, cached, ctx]]) => [
    model,
    {
      inputMicrosPerMtok: micros(input),
      outputMicrosPerMtok: micros(output),
      cachedInputMicrosPerMtok: cached === null ? null : micros(cached),
      contextWindow: ctx,
    },
  ]),
);

/**
 * The catalog entry for a model id as providers spell it: exact, without a vendor prefix
 * (`openai/gpt-4o`), or a dated snapshot of a listed model (`gpt-4o-2024-08-06`,
 * `claude-sonnet-4-5-20250929`), longest listed name first.
 */
export function catalogLookup(prices: ReadonlyMap<string, ModelPrice>, model: string): ModelPrice | undefined {
  const exact = prices.get(model);
  if (exact) return exact;
  const bare = model.includes('/') ? model.slice(model.lastIndexOf('/') + 1) : model;
  const direct = prices.get(bare);
  if (direct) return direct;
  let best: string | undefined;
  for (const name of prices.keys()) {
    if (bare.startsWith(`${name}-`) && /^-(\d{4}-?\d{2}-?\d{2}|\d{8}|latest|\d{4})$/.test(bare.slice(name.length))) {
      if (!best || name.length > best.length) best = name;
    }
  }
  return best ? prices.get(best) : undefined;
}

export type TokenCounts = { input: number; output: number; cached: number };

/**
 * The cost of a call in micro-units, rounded up: cached prompt tokens at the cached price,
 * the rest of the prompt at the input price, completion (including reasoning) at the
 * output price. Integer arithmetic throughout (tokens x price stays far below 2^53).
 */
export function costMicros(price: ModelPrice, tokens: TokenCounts): number {
  const cached = Math.min(tokens.cached, tokens.input);
  const cachedPrice = price.cachedInputMicrosPerMtok ?? price.inputMicrosPerMtok;
  const numerator =
    (tokens.input - cached) * price.inputMicrosPerMtok +
    cached * cachedPrice +
    tokens.output * price.outputMicrosPerMtok;
  return Math.ceil(numerator / 1_000_000);
}
