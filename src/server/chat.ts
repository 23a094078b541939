// Chat messages to prompt text: the model's chat_template (tokenizer_config.json, a Jinja template) rendered with
// @huggingface/jinja, the maintained implementation Hugging Face's own JS libraries use; base models without one get
// DEFAULT_CHAT_TEMPLATE.

import { Template } from '@huggingface/jinja';

import { ConfigError } from '../errors.js';
import { ApiError, type ChatMessage } from './openai.js';

/**
 * The template for a model without a chat_template: each message as "role: content" and a blank line, then
 * "assistant:" for the reply. Plain text that a base model continues naturally; send a stop string such as
 * "\n\nuser:" to end the reply at the next turn.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

/** Special-token strings the templates may use (`bos_token`, `eos_token`). */
export interface TemplateTokens {
  bos_token?: string;
  eos_token?: string;
}

/**
 * Compiles a chat template (ConfigError naming the problem when it does not parse) into a renderer of messages;
 * a template that raises an error for some messages (many check that roles alternate) answers 400 with its message.
 */
export function chatRenderer(
  template: string | undefined,
  tokens: TemplateTokens = {},
): (messages: ChatMessage[]) => string {
  let compiled: Template;
  try {
    compiled = new Template(template ?? DEFAULT_CHAT_TEMPLATE);
  } catch (e) {
    throw new ConfigError(`chat_template: does not parse as a Jinja template: ${(e as Error).message}`);
  }
  return (messages) => {
    try {
      return compiled.render({ messages, add_generation_prompt: true, ...tokens });
    } catch (e) {
      throw new ApiError(400, `'messages': the chat template refused them: ${(e as Error).message}`, 'messages');
    }
  };
}
