// Loading and running a model directory in a browser: config.json, the safetensors weights (one file or Hugging Face
// shards, each streamed with progress into the model's tensors) and tokenizer.json, over fetch or from
// picked files; the same checks as loadModelDir on Node (src/io/model-load.ts is shared by both). The model runs on the
// webgpu device or on the host ('cpu' in a browser: the reference device's TypeScript kernels, there being no addon).

import type { Device } from '../backend/device.js';
import { referenceBackend } from '../backend/select.js';
import { requestWebGpu } from '../backend/webgpu/index.js';
import { type WebGpuDevice } from '../backend/webgpu/device.js';
import { noGrad } from '../autograd/tape.js';
import { BackendError, ConfigError, FormatError, ShapeError } from '../errors.js';
import { type GenerateOptions, generate } from '../generate/generate.js';
import type { GenerationEvent, GenerationRequest } from '../generate/sequence.js';
import {
  type GenerationDefaults,
  type LoadOptions,
  checkTokenizerFits,
  checkpointSpec,
  generationDefaults,
  parseJSON,
  streamCheckpointModel,
} from '../io/model-load.js';
import { type TensorFile, WEIGHTS_FILE, WEIGHTS_INDEX, Weights, shardFiles } from '../io/safetensors-format.js';
import type { CausalLM } from '../models/lm.js';
import { RetNetModel } from '../models/retnet/model.js';
import { quantizeModel } from '../quant/model.js';
import { tidy } from '../tensor/scope.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { type LoadProgress, type ModelSource, type StreamedFile, modelFiles } from './files.js';

export type { LoadProgress, ModelSource } from './files.js';

export interface LoadModelOptions extends Pick<LoadOptions, 'allowNonFinite'> {
  /** 'webgpu' (default) or 'cpu' (the host: the reference kernels, float32). */
  device?: 'webgpu' | 'cpu';
  /**
   * Hold a float32 checkpoint's Linear weights (projections, FFN, head) as float16, packed two per word and computed
   * in float32 as a 16-bit checkpoint's are: half their memory and bandwidth. Default: on webgpu when the adapter has
   * `shader-f16` (the float32 kernels keep every other adapter, e.g. SwiftShader, exact). 16-bit checkpoints keep
   * their weights as stored either way.
   */
  float16Weights?: boolean;
  /** Called as each file's bytes arrive. */
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

export interface LogitsOptions {
  /** RetNet's form: 'parallel' (default), 'chunkwise' or 'recurrent' (one step per token). */
  form?: 'parallel' | 'chunkwise' | 'recurrent';
  /** The chunkwise form's chunk size (default: the model's). */
  chunkSize?: number;
}

/** A loaded model with its tokenizer, on one device. */
export class WebModel {
  constructor(
    readonly model: CausalLM,
    readonly tokenizer: Tokenizer | null,
    readonly device: Device,
    /** config.json as read. */
    readonly config: Record<string, unknown>,
    readonly generation: GenerationDefaults,
  ) {
    const ids = tokenizer ? [...generation.eosTokenIds, tokenizer.eosId] : generation.eosTokenIds;
    this.eosIds = [...new Set(ids)];
  }

  /**
   * The ids that end a generation unless a request gives its own: generation_config.json's eos_token_id(s) and the
   * tokenizer's end-of-text, as `retnet generate` and `retnet serve` take them from a model directory on Node.
   */
  readonly eosIds: readonly number[];

  /** The logits rows of one sequence of token ids: one Float32Array of vocabSize per position. */
  async logits(ids: readonly number[], opts: LogitsOptions = {}): Promise<Float32Array[]> {
    const m = this.model;
    const V = m.vocabSize;
    ids.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= V)
        throw new ShapeError(`logits: token ${t} at position ${i} is outside the vocabulary [0, ${V})`);
    });
    const form = opts.form ?? 'parallel';
    if (!(m instanceof RetNetModel) && (opts.form !== undefined || opts.chunkSize !== undefined))
      throw new ConfigError(`logits: form and chunkSize apply to RetNet models, not to a ${m.arch}`);
    if (form === 'recurrent') {
      if (!(m instanceof RetNetModel)) throw new ConfigError("logits: the recurrent form is RetNet's");
      const state = m.emptyState(1);
      try {
        const rows: Float32Array[] = [];
        for (const t of ids) {
          const l = m.step([t], state);
          rows.push(Float32Array.from(await l.dataAsync()));
          l.dispose();
        }
        return rows;
      } finally {
        state.dispose();
      }
    }
    const input = this.device.fromData(ids, [1, ids.length], 'int32');
    const out = noGrad(() =>
      tidy(() =>
        m instanceof RetNetModel
          ? m.forward(input, { form, chunkSize: opts.chunkSize ?? m.config.chunkSize })
          : m.forward(input),
      ),
    );
    input.dispose();
    try {
      const flat = Float32Array.from(await out.dataAsync());
      return ids.map((_, i) => flat.subarray(i * V, (i + 1) * V));
    } finally {
      out.dispose();
    }
  }

  /**
   * Streams generations: `generate()` of src/generate with this model and tokenizer (the same requests and events);
   * a request without `eosIds` ends at the directory's (see eosIds).
   */
  generate(requests: readonly GenerationRequest[], opts: GenerateOptions = {}): AsyncGenerator<GenerationEvent> {
    if (!this.tokenizer)
      throw new FormatError('generate: the model directory has no tokenizer.json (logits work on token ids alone)');
    const withEos = requests.map((r) => (r.eosIds === undefined ? { ...r, eosIds: this.eosIds } : r));
    return generate(this.model, this.tokenizer, withEos, opts);
  }

  /** Tensor bytes on the device (exact) and, on webgpu, the GPU buffers behind them. */
  memory(): { bytes: number; peak: number; gpuBytes: number | null } {
    const gpu = this.device.name === 'webgpu' ? (this.device as WebGpuDevice).gpuMemory().bytes : null;
    return { bytes: this.device.memory.current, peak: this.device.memory.peak, gpuBytes: gpu };
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** Whether the webgpu adapter has the `shader-f16` feature (loadModel's float16Weights default). */
export function adapterHasShaderF16(device: Pick<WebGpuDevice, 'info'>): boolean {
  return device.info.features.includes('shader-f16');
}

async function pickDevice(name: LoadModelOptions['device'] = 'webgpu'): Promise<Device> {
  if (name === 'cpu') return referenceBackend();
  if (name !== 'webgpu') throw new ConfigError(`loadModel: device must be 'webgpu' or 'cpu', got ${String(name)}`);
  const d = await requestWebGpu();
  if (typeof d === 'string') throw new BackendError(`loadModel: the webgpu device is unavailable: ${d}`);
  return d;
}

/**
 * Loads a model directory (a URL or picked files): config.json, the weights, tokenizer.json when present. Each
 * safetensors file streams in: its header first (checked with the config before the model is allocated), then each
 * tensor's bytes, as they arrive, into what the model holds it in (the device's tensor, through one host buffer of
 * that tensor's size), so no file is ever held whole in memory. Shards are opened together (their headers first).
 */
export async function loadModel(source: ModelSource, opts: LoadModelOptions = {}): Promise<WebModel> {
  const files = modelFiles(source);
  const device = await pickDevice(opts.device);
  const open = (name: string) => files.open(name, opts.onProgress, opts.signal);
  const where = (name: string) => `${files.where}/${name}`.replace(/\/\/(?=[^/]*$)/, '/');
  const json = async (name: string): Promise<Record<string, unknown> | null> => {
    const f = await open(name);
    if (!f) return null;
    const v = parseJSON(new TextDecoder().decode(await f.readAll()), f.where);
    if (v === null || typeof v !== 'object' || Array.isArray(v))
      throw new FormatError(`${f.where}: expected a JSON object`);
    return v as Record<string, unknown>;
  };

  const configFile = await open('config.json');
  if (!configFile) throw new FormatError(`${files.where}: missing config.json`);
  const configPath = configFile.where;
  const checked = checkpointSpec(
    parseJSON(new TextDecoder().decode(await configFile.readAll()), configPath),
    configPath,
  );
  const { config } = checked;
  const streams = new Map<TensorFile, StreamedFile>();
  let model: CausalLM;
  try {
    const indexFile = await open(WEIGHTS_INDEX);
    let weights: Weights;
    const header = async (f: StreamedFile) => {
      const file = await f.safetensorsHeader();
      streams.set(file, f);
      return file;
    };
    if (indexFile) {
      const indexPath = indexFile.where;
      const index = parseJSON(new TextDecoder().decode(await indexFile.readAll()), indexPath);
      const shards = new Map<string, TensorFile>();
      for (const name of shardFiles(index, indexPath)) {
        const f = await open(name);
        if (!f) throw new FormatError(`${indexPath} names ${name}, which ${files.where} lacks`);
        shards.set(name, await header(f));
      }
      weights = Weights.fromIndex(index, indexPath, (name) => shards.get(name)!);
    } else {
      const f = await open(WEIGHTS_FILE);
      if (!f) throw new FormatError(`${files.where}: missing ${WEIGHTS_FILE} (or ${WEIGHTS_INDEX} for shards)`);
      weights = Weights.single(await header(f));
    }
    model = await streamCheckpointModel(
      checked,
      configPath,
      weights,
      { backend: device, allowNonFinite: opts.allowNonFinite },
      async ({ file, entry, into }) => {
        const f = streams.get(file)!;
        const what = `tensor '${entry.name}'`;
        await f.skipTo(file.header.dataStart + entry.begin, what);
        await f.readInto(into, what);
      },
    );
    try {
      // Past the tensors the model does not read (torchscale's buffers) to the end the header gives.
      for (const [file, f] of streams) {
        for (const e of [...file.header.entries.values()].sort((a, b) => a.end - b.end))
          if (file.header.dataStart + e.end > f.position)
            await f.skipTo(file.header.dataStart + e.end, `tensor '${e.name}'`);
        await f.expectEnd('the data section');
        file.close();
      }
    } catch (e) {
      model.dispose();
      throw e;
    }
  } finally {
    for (const f of streams.values()) f.cancel();
  }
  const f16 = opts.float16Weights ?? (device.name === 'webgpu' && adapterHasShaderF16(device as WebGpuDevice));
  try {
    if (f16) quantizeModel(model, 'f16', 'float32');
    const tokenizerFile = await open('tokenizer.json');
    let tokenizer: Tokenizer | null = null;
    if (tokenizerFile) {
      const tokenizerJSON = await tokenizerFile.readAll();
      const ctx = {
        tokenizerConfig: await json('tokenizer_config.json'),
        specialTokensMap: await json('special_tokens_map.json'),
      };
      tokenizer = loadTokenizer(new TextDecoder().decode(tokenizerJSON), tokenizerFile.where, ctx);
      checkTokenizerFits(tokenizer, model, tokenizerFile.where, configPath, config);
    }
    const gen = await json('generation_config.json');
    const genPath = where('generation_config.json');
    const generation = generationDefaults(config, gen, configPath, genPath);
    const bad = generation.eosTokenIds.find((id) => id >= model.vocabSize);
    if (bad !== undefined)
      throw new ConfigError(
        `${files.where}: eos_token_id ${bad} (config.json or generation_config.json) is not an id of the model's ` +
          `vocabulary [0, ${model.vocabSize})`,
      );
    return new WebModel(model, tokenizer, device, config, generation);
  } catch (e) {
    model.dispose();
    throw e;
  }
}
