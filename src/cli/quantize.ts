// `retnet quantize --model DIR --weights FORMAT --out DIR2`: writes a copy of a model directory with every Linear's
// weight in FORMAT (src/quant): quantized weights as their scales and codes, the format named in the safetensors
// metadata (src/io/model-dir.ts saveModelDir), so DIR2 loads again without the float checkpoint. The tokenizer and
// the Hugging Face side files (tokenizer_config.json, special_tokens_map.json, generation_config.json) are copied.

import { copyFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { loadModelDir, saveModelDir } from '../io/model-dir.js';
import { WEIGHT_FORMATS } from '../quant/formats.js';
import { weightBytes } from '../quant/model.js';
import { UsageError, choice, defineCommand, text } from './command.js';

const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

export const quantizeCommand = defineCommand({
  name: 'quantize',
  summary: "write a copy of a model directory with every Linear's weight in a low-precision format",
  flags: {
    model: text('the model directory to read', { placeholder: 'dir', required: true, nonEmpty: true }),
    weights: { ...choice('the format of every Linear weight', WEIGHT_FORMATS), required: true },
    out: text('the directory to write (must not hold a model yet)', {
      placeholder: 'dir',
      required: true,
      nonEmpty: true,
    }),
  },
  async run({ values }) {
    const [src, out] = [values.model!, values.out!];
    if (resolve(src) === resolve(out)) throw new UsageError('quantize: --out must differ from --model');
    if (existsSync(join(out, 'config.json')))
      throw new UsageError(`quantize: ${out} already holds a model (config.json); choose another --out`);
    const { model } = loadModelDir(src, { weights: values.weights });
    let bytes: number;
    try {
      saveModelDir(out, model);
      bytes = weightBytes(model);
    } finally {
      model.dispose();
    }
    for (const f of SIDE_FILES) if (existsSync(join(src, f))) copyFileSync(join(src, f), join(out, f));
    process.stderr.write(`quantize: wrote ${out} (${values.weights}, ${bytes} weight bytes)\n`);
    return 0;
  },
});
