// Runs in the page (bundled by test/web-model.test.ts): loads model directories with retnet/web's loadModel and
// returns logits rows and greedy generations for the test to compare with expected values and with Node.
import type { RetNetDecodeState, RetNetModel } from '../../src/models/retnet/model.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { type LogitsOptions, loadModel } from '../../src/web.js';

async function logits(
  url: string,
  device: 'webgpu' | 'cpu',
  tokens: number[],
  forms: LogitsOptions[],
): Promise<{ rows: number[][][]; errors: string[]; progress: number }> {
  let progress = 0;
  const m = await loadModel(url, { device, onProgress: () => progress++ });
  const rows: number[][][] = [];
  for (const opts of forms) rows.push((await m.logits(tokens, opts)).map((r) => Array.from(r)));
  m.dispose();
  const errors = (m.device as { errors?: string[] }).errors ?? [];
  return { rows, errors: [...errors], progress };
}

async function greedy(
  url: string,
  device: 'webgpu' | 'cpu',
  prompt: string,
  maxNewTokens: number,
): Promise<{ tokens: number[]; text: string; created: number[] }> {
  const m = await loadModel(url, { device });
  const tokens: number[] = [];
  let text = '';
  // Buffers created per step: once the pool is warm, a step allocates nothing new.
  const created: number[] = [];
  const gpu = m.device as { gpuMemory?: () => { created: number } };
  for await (const ev of m.generate([{ prompt, maxNewTokens, sampling: { temperature: 0 } }])) {
    if (ev.type !== 'token') continue;
    tokens.push(ev.token);
    text += ev.text;
    if (gpu.gpuMemory) created.push(gpu.gpuMemory().created);
  }
  m.dispose();
  return { tokens, text, created };
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

declare global {
  interface Window {
    retnetModel: { logits: typeof logits; greedy: typeof greedy; prefills: typeof prefills };
  }
}
window.retnetModel = { logits, greedy, prefills };
