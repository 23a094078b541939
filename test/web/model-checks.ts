// Runs in the page (bundled by test/web-model.test.ts): loads model directories with retnet/web's loadModel and
// returns logits rows and greedy generations for the test to compare with expected values and with Node.
import type { GenerationEvent, GenerationRequest } from '../../src/generate/sequence.js';
import type { RetNetDecodeState, RetNetModel } from '../../src/models/retnet/model.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { type LoadProgress, type LogitsOptions, loadModel } from '../../src/web.js';

/** Per file: whether loaded never went down, the last event's loaded and total, and how many events came. */
export type ProgressSeen = Record<string, { monotone: boolean; loaded: number; total: number | null; events: number }>;

function progressLog(): { onProgress: (p: LoadProgress) => void; seen: ProgressSeen } {
  const seen: ProgressSeen = {};
  const onProgress = (p: LoadProgress) => {
    const s = (seen[p.file] ??= { monotone: true, loaded: 0, total: null, events: 0 });
    if (p.loaded < s.loaded || (s.total !== null && p.total !== s.total)) s.monotone = false;
    Object.assign(s, { loaded: p.loaded, total: p.total, events: s.events + 1 });
  };
  return { onProgress, seen };
}

/** A model directory as picked files: each file fetched into a File (loadModel then reads File.stream()). */
async function pickedFiles(url: string, names: string[]): Promise<File[]> {
  return Promise.all(names.map(async (n) => new File([await (await fetch(url + n)).blob()], n)));
}

async function logits(
  url: string | { url: string; files: string[] },
  device: 'webgpu' | 'cpu',
  tokens: number[],
  forms: LogitsOptions[],
  float16Weights?: boolean,
): Promise<{ rows: number[][][]; errors: string[]; progress: ProgressSeen; weightBytes: number }> {
  const { onProgress, seen } = progressLog();
  const source = typeof url === 'string' ? url : await pickedFiles(url.url, url.files);
  const m = await loadModel(source, { device, onProgress, float16Weights });
  const rows: number[][][] = [];
  for (const opts of forms) rows.push((await m.logits(tokens, opts)).map((r) => Array.from(r)));
  const weightBytes = m.memory().bytes;
  m.dispose();
  const errors = (m.device as { errors?: string[] }).errors ?? [];
  return { rows, errors: [...errors], progress: seen, weightBytes };
}

/** The message loadModel fails with (null if it loads). */
async function loadError(url: string, device: 'webgpu' | 'cpu'): Promise<string | null> {
  try {
    (await loadModel(url, { device })).dispose();
    return null;
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
}

/**
 * Every event of one generate() call, as Node's generate() gives them (the test compares them); and per token event
 * on webgpu the GPU buffers created so far and the tensor bytes live (a decode step allocates nothing new once the
 * pool is warm, and RetNet's state does not grow).
 */
async function events(
  url: string,
  device: 'webgpu' | 'cpu',
  requests: GenerationRequest[],
): Promise<{ events: GenerationEvent[]; created: number[]; live: number[]; eosIds: number[] }> {
  const m = await loadModel(url, { device });
  const out: GenerationEvent[] = [];
  const created: number[] = [];
  const live: number[] = [];
  const gpu = m.device as { gpuMemory?: () => { created: number } };
  for await (const ev of m.generate(requests)) {
    out.push(ev);
    if (ev.type === 'token' && gpu.gpuMemory) {
      created.push(gpu.gpuMemory().created);
      live.push(m.device.memory.current);
    }
  }
  const eosIds = [...m.eosIds];
  m.dispose();
  return { events: out, created, live, eosIds };
}

async function greedy(
  url: string,
  device: 'webgpu' | 'cpu',
  prompt: string,
  maxNewTokens: number,
): Promise<{ tokens: number[]; text: string; created: number[]; live: number[] }> {
  const r = await events(url, device, [{ prompt, maxNewTokens, sampling: { temperature: 0 }, ignoreEos: true }]);
  const tokens: number[] = [];
  let text = '';
  for (const ev of r.events) {
    if (ev.type === 'token') tokens.push(ev.token);
    text += ev.text;
  }
  return { tokens, text, created: r.created, live: r.live };
}

/**
 * RetNet's prefill two ways: the prompts packed into one call (retention with segments), and prompt 0 in pieces of
 * `piece` tokens, each continuing the state the previous left (retention from an initial state), then one step.
 * Returns the logits rows after each prompt, after the pieces, and after the step.
 */
async function prefills(
  url: string,
  device: 'webgpu' | 'cpu',
  prompts: number[][],
  piece: number,
  form: 'parallel' | 'chunkwise',
): Promise<{ packed: number[][]; pieces: number[]; step: number[] }> {
  const m = await loadModel(url, { device });
  const lm = m.model as RetNetModel;
  const rows = async (t: Tensor) => {
    const V = t.shape[t.shape.length - 1]!;
    const flat = Array.from(await t.dataAsync());
    t.dispose();
    return Array.from({ length: flat.length / V }, (_, i) => flat.slice(i * V, (i + 1) * V));
  };
  const packed = lm.prefill(prompts, { form });
  packed.state.dispose();
  const out = { packed: await rows(packed.logits), pieces: [] as number[], step: [] as number[] };
  const p0 = prompts[0]!;
  let state: RetNetDecodeState | undefined;
  for (let at = 0; at < p0.length; at += piece) {
    const r = lm.prefill([p0.slice(at, at + piece)], { form, state });
    state = r.state;
    out.pieces = (await rows(r.logits))[0]!;
  }
  out.step = (await rows(lm.step([p0[0]!], state!)))[0]!;
  state!.dispose();
  m.dispose();
  return out;
}

/**
 * Logits through a built bundle (the package's `retnet/web` file, served at `bundleUrl`) instead of this page's
 * own bundle of the source.
 */
async function bundleLogits(bundleUrl: string, url: string, tokens: number[]): Promise<number[][]> {
  const lib = (await import(/* @vite-ignore */ bundleUrl)) as { loadModel: typeof loadModel };
  const m = await lib.loadModel(url, { device: 'webgpu' });
  const rows = (await m.logits(tokens)).map((r) => Array.from(r));
  m.dispose();
  return rows;
}

declare global {
  interface Window {
    retnetModel: {
      logits: typeof logits;
      loadError: typeof loadError;
      greedy: typeof greedy;
      events: typeof events;
      bundleLogits: typeof bundleLogits;
      prefills: typeof prefills;
    };
  }
}
window.retnetModel = { logits, loadError, greedy, events, prefills, bundleLogits };
