// The example page's script (bundled with the library by examples/web/serve.ts): loads a model directory from a URL
// or a picked folder, then streams a continuation of the prompt, with tokens/s, the device and its memory.
import { type WebModel, loadModel } from '../../src/web.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const stats = $('stats');
let model: WebModel | null = null;

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function deviceLabel(m: WebModel): string {
  const d = m.device as { name: string; info?: { vendor: string; architecture: string } };
  // SwiftShader is a CPU implementation of WebGPU: its speed says nothing about a GPU's.
  return d.info ? `webgpu (${d.info.vendor} ${d.info.architecture})` : `${d.name} (host, TypeScript kernels)`;
}

$('load').addEventListener('click', async () => {
  const picked = $<HTMLInputElement>('folder').files;
  const source = picked && picked.length > 0 ? picked : $<HTMLInputElement>('url').value;
  const device = $<HTMLSelectElement>('device').value as 'webgpu' | 'cpu';
  $<HTMLButtonElement>('generate').disabled = true;
  model?.dispose();
  model = null;
  status.textContent = 'loading…';
  try {
    const t0 = performance.now();
    model = await loadModel(source, {
      device,
      onProgress: (p) => {
        status.textContent = `loading ${p.file}: ${mib(p.loaded)}${p.total ? ` of ${mib(p.total)}` : ''}`;
      },
    });
    const mem = model.memory();
    status.textContent =
      `loaded ${model.model.arch} (vocab ${model.model.vocabSize}) on ${deviceLabel(model)} in ` +
      `${((performance.now() - t0) / 1000).toFixed(2)} s; weights ${mib(mem.bytes)}`;
    $<HTMLButtonElement>('generate').disabled = false;
    document.body.dataset.state = 'loaded';
  } catch (e) {
    status.textContent = `error: ${(e as Error).message}`;
    document.body.dataset.state = 'error';
  }
});

$('generate').addEventListener('click', async () => {
  if (!model) return;
  const prompt = $<HTMLTextAreaElement>('prompt').value;
  const out = $('continuation');
  $('prompt-echo').textContent = prompt;
  out.textContent = '';
  document.body.dataset.state = 'generating';
  const t0 = performance.now();
  let first = 0;
  let tokens = 0;
  try {
    const events = model.generate([
      {
        prompt,
        maxNewTokens: Number($<HTMLInputElement>('max').value),
        sampling: { temperature: Number($<HTMLInputElement>('temp').value) },
      },
    ]);
    for await (const ev of events) {
      // The end event carries the text held back until then (a partial character or stop string).
      out.textContent += ev.text;
      if (ev.type !== 'token') continue;
      tokens++;
      if (tokens === 1) first = performance.now();
      const decode = tokens > 1 ? ((tokens - 1) * 1000) / (performance.now() - first) : 0;
      const mem = model.memory();
      stats.textContent =
        `${tokens} tokens · first token ${(first - t0).toFixed(0)} ms · ${decode.toFixed(1)} tokens/s decoding · ` +
        `${deviceLabel(model)} · tensors ${mib(mem.bytes)} (peak ${mib(mem.peak)})` +
        (mem.gpuBytes !== null ? ` · GPU buffers ${mib(mem.gpuBytes)}` : '');
    }
    document.body.dataset.state = 'done';
  } catch (e) {
    status.textContent = `error: ${(e as Error).message}`;
    document.body.dataset.state = 'error';
  }
});
