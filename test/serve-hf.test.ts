// Serving a Hugging Face style directory: what `retnet serve` takes from it besides the weights -- the ids that end a
// generation (generation_config.json's eos_token_id list with the tokenizer's end-of-text), tokenizer_config.json's
// chat template and the special-token texts the template writes (bos_token, eos_token), and a chat prompt encoded
// without the tokenizer adding a second BOS of its own.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { loadForGeneration } from '../src/cli/generate.js';
import { saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import { startServer } from '../src/server/server.js';
import { HfTokenizer } from '../src/tokenizer/hf.js';

const TOK = join(import.meta.dirname, '..', '..', 'shared', 'fla-vectors', 'tokenizer');
const root = mkdtempSync(join(tmpdir(), 'retnet-serve-hf-'));
after(() => rmSync(root, { recursive: true, force: true }));

const TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]" +
  "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";

function hfDir(): string {
  const dir = mkdtempSync(join(root, 'm-'));
  const model = createModel('retnet', 'tiny', { vocabSize: 724, layers: 1 }, { seed: 3 });
  saveModelDir(dir, model);
  model.dispose();
  copyFileSync(join(TOK, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const special = { bos_token: '<s>', eos_token: '</s>' };
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ add_bos_token: true, ...special, chat_template: TEMPLATE }),
  );
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 7] }));
  return dir;
}

describe('serving a Hugging Face style directory', () => {
  it('takes the eos ids, the chat template and its special tokens from the directory', async () => {
    const loaded = loadForGeneration(hfDir());
    const { model, tokenizer } = loaded;
    try {
      assert.ok(tokenizer instanceof HfTokenizer);
      assert.deepEqual(loaded.eosIds, [2, 7]);
      assert.equal(loaded.chatTemplate, TEMPLATE);
      assert.deepEqual(loaded.templateTokens, { bos_token: '<s>', eos_token: '</s>' });

      const server = await startServer(model, tokenizer, {
        modelId: 'm',
        port: 0,
        logLevel: 'silent',
        chatTemplate: loaded.chatTemplate,
        templateTokens: loaded.templateTokens,
        eosIds: loaded.eosIds,
      });
      try {
        const messages = [
          { role: 'user', content: 'Hello' },
          { role: 'assistant', content: 'Hi' },
          { role: 'user', content: 'Bye' },
        ];
        const res = await fetch(`${server.url}/tokenize`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm', messages }),
        });
        assert.equal(res.status, 200);
        const { tokens } = (await res.json()) as { tokens: number[] };
        const text = '<s>[INST] Hello [/INST]Hi</s>[INST] Bye [/INST]';
        assert.deepEqual(tokens, tokenizer.encode(text, { special: false }));
        assert.equal(tokens.filter((t) => t === tokenizer.bosId).length, 1, 'one BOS: the template writes it');
        assert.ok(tokens.includes(tokenizer.eosId), "the template's eos_token is the end-of-text id");
        assert.equal(tokenizer.encode(text)[0], tokenizer.bosId, 'encode() alone would add a BOS in front');
      } finally {
        await server.close();
      }
    } finally {
      model.dispose();
    }
  });

  it('an eos id outside the vocabulary is an error naming it', () => {
    const dir = hfDir();
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 9999] }));
    assert.throws(() => loadForGeneration(dir), /9999/);
  });
});
