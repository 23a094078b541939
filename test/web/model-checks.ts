// Runs in the page (bundled by test/web-model.test.ts): loads model directories with retnet/web's loadModel and
// returns logits rows and greedy generations for the test to compare with expected values and with Node.
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

declare global {
  interface Window {
    retnetModel: { logits: typeof logits; greedy: typeof greedy };
  }
}
window.retnetModel = { logits, greedy };
