#!/usr/bin/env python3
"""Fixtures for `ulysses tokenize` on SFT data (issue 18): tests/fixtures/chat_llama3 and
tests/fixtures/chat_qwen2, and in tests/fixtures/chat_sft the data (data.jsonl) and the
references tests/chat_test.sh compares with.

Each directory holds a small byte-level BPE tokenizer trained here with the `tokenizers`
library (the Llama 3 split regex with Llama 3's special tokens and a BOS post-processor;
the Qwen2 regex with ChatML's special tokens and no BOS) and a tokenizer_config.json whose
chat_template is the public definition of the Llama 3 Instruct template, or of Qwen2's
ChatML template (with its default system message). chat_qwen2 is also a complete tiny
model directory: a random Qwen2ForCausalLM (config.json + model.safetensors) of the
tokenizer's vocabulary, for the "Fine-tune a Hugging Face model" test.

References (expected_*.jsonl, one {"ids", "mask"} per line of data.jsonl):
  messages            transformers' apply_chat_template(messages, tokenize=True); the mask
                      is 1 on the tokens whose characters (offset mapping of the fast
                      tokenizer on the rendered text) overlap an assistant turn's content
                      and its end-of-turn token (<|eot_id|>, <|im_end|>)
  prompt/completion   tokenizers: post-processor ids before, prompt, completion, EOS
                      (tokenizer_config.json eos_token, unless the completion ends with it),
                      post-processor ids after; mask 1 from the completion on
  input_ids + labels  as given, without the tokens whose attention_mask is 0; mask =
                      labels != -100
  text                tokenizers' encode(text).ids, mask all ones
expected_chatml.jsonl is chat_qwen2 rendered with the plain ChatML template (the test
passes --chat-format chatml).

Run from the repository root with a Python that has transformers, tokenizers and torch:
    /tmp/famenv/bin/python scripts/make_chat_fixtures.py
"""
import json
import os
import sys

import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "What is the capital of France? The capital of France is Paris.",
    "You are a helpful assistant. Answer the question below in one sentence.",
    "Long-context training splits the sequence over GPUs; attention sees all of it.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Numbers: 12345, 3.14159, 2026-12-07; emoji: 🙂👍🏽; 中文文本；Ünïcödé text.",
    "user assistant system tool\n\nHello! How can I help you today?",
]

# one conversation / record per line of data.jsonl
DATA = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "The capital of France is Paris."}]},
    {"messages": [{"role": "system", "content": "You are a terse assistant."},
                  {"role": "user", "content": "  Add 2 and 3.\n"},
                  {"role": "assistant", "content": "\n5 \n"},
                  {"role": "user", "content": "And times 4?"},
                  {"role": "assistant", "content": "20."}]},
    {"messages": [{"role": "user", "content": "Write a function."},
                  {"role": "assistant", "content": "def add(a, b):\n    return a + b\n"}]},
    {"messages": [{"role": "user", "content": "emoji 🙂👍🏽 and 中文\u3000"},
                  {"role": "assistant", "content": "\u00a0Ünïcödé: 12345\u2028"},
                  {"role": "tool", "content": ""}]},
    {"messages": [{"role": "assistant", "content": "I speak first."},
                  {"role": "user", "content": "ok"}]},
    {"messages": [{"role": "user", "content": "Say <|im_end|> or <|eot_id|> literally."},
                  {"role": "assistant", "content": ""}]},
    {"prompt": "Question: what is 2 + 3?\nAnswer:", "completion": " 5"},
    {"prompt": "", "completion": "The quick brown fox."},
    {"prompt": "Translate to French: cat\n", "completion": "chat"},
    {"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, -100, 8, 9, 10]},
    {"input_ids": [11, 12, 13]},
    {"input_ids": [14, 15, 16, 17, 1, 1], "labels": [-100, 15, 16, 17, -100, -100], "attention_mask": [1, 1, 1, 1, 0, 0]},
    {"text": "Plain pretraining text: the lazy dog sleeps."},
]

MODEL = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, hidden_act="silu",
    use_sliding_window=False, initializer_range=0.2,
)


def train(specials, regex, bos):
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=384, special_tokens=specials, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, tr)
    if bos:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                          special_tokens=[(bos, bid)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def chat_reference(hf, messages, template, end_marker, head_marker):
    ids = hf.apply_chat_template(messages, chat_template=template, tokenize=True)
    if not isinstance(ids, list):  # transformers 5: a BatchEncoding
        ids = ids["input_ids"]
    text = hf.apply_chat_template(messages, chat_template=template, tokenize=False)
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids, "rendered text does not tokenize to apply_chat_template's ids"
    spans = []  # [start, end) characters of each assistant turn's content + end-of-turn token
    prev = ""
    for k in range(len(messages)):
        cur = hf.apply_chat_template(messages[: k + 1], chat_template=template, tokenize=False)
        assert cur.startswith(prev)
        if messages[k]["role"] == "assistant":
            seg_a = len(prev)
            seg = cur[seg_a:]
            start = seg_a + seg.rindex(head_marker) + len(head_marker)
            end = seg_a + seg.rindex(end_marker) + len(end_marker)
            spans.append((start, end))
        prev = cur
    assert text == prev
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
    return ids, mask


def references(tok, hf, template, end_marker, head_marker, eos):
    pre = tok.encode("").ids  # the post-processor's ids (all before the document here)
    eos_id = tok.token_to_id(eos)
    out = []
    for rec in DATA:
        if "messages" in rec:
            ids, mask = chat_reference(hf, rec["messages"], template, end_marker, head_marker)
        elif "prompt" in rec:
            p = tok.encode(rec["prompt"], add_special_tokens=False).ids
            c = tok.encode(rec["completion"], add_special_tokens=False).ids
            if not c or c[-1] != eos_id:
                c = c + [eos_id]
            ids, mask = pre + p + c, [0] * (len(pre) + len(p)) + [1] * len(c)
        elif "input_ids" in rec:
            keep = rec.get("attention_mask", [1] * len(rec["input_ids"]))
            ids = [x for x, k in zip(rec["input_ids"], keep) if k]
            mask = [int(x != -100) for x, k in zip(rec.get("labels", rec["input_ids"]), keep) if k]
        else:
            ids = tok.encode(rec["text"]).ids
            mask = [1] * len(ids)
        out.append({"ids": ids, "mask": mask})
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    torch.manual_seed(0)
    setups = [
        ("chat_llama3", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>"], LLAMA3_REGEX, "<|begin_of_text|>", LLAMA3_TEMPLATE,
         dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")),
        ("chat_qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], QWEN2_REGEX, None, QWEN2_TEMPLATE,
         dict(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")),
    ]
    os.makedirs(os.path.join(FIX, "chat_sft"), exist_ok=True)
    write_jsonl(os.path.join(FIX, "chat_sft", "data.jsonl"), DATA)
    for name, specials, regex, bos, template, cfg in setups:
        d = os.path.join(FIX, name)
        os.makedirs(d, exist_ok=True)
        tok = train(specials, regex, bos)
        tok.save(os.path.join(d, "tokenizer.json"))
        conf = dict(cfg, chat_template=template, tokenizer_class="PreTrainedTokenizerFast",
                    model_max_length=512, clean_up_tokenization_spaces=False)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(conf, f, indent=2, sort_keys=True)
            f.write("\n")
        hf = transformers.AutoTokenizer.from_pretrained(d)
        llama = name == "chat_llama3"
        end, head = ("<|eot_id|>", "<|end_header_id|>\n\n") if llama else ("<|im_end|>", "<|im_start|>assistant\n")
        write_jsonl(os.path.join(FIX, "chat_sft", f"expected_{name}.jsonl"), references(tok, hf, template, end, head, cfg["eos_token"]))
        if not llama:
            write_jsonl(os.path.join(FIX, "chat_sft", "expected_chatml.jsonl"),
                        references(tok, hf, CHATML_TEMPLATE, end, head, cfg["eos_token"]))
            config = transformers.Qwen2Config(vocab_size=tok.get_vocab_size(), bos_token_id=None,
                                              eos_token_id=tok.token_to_id("<|im_end|>"),
                                              **{k: v for k, v in MODEL.items() if k not in ("architectures", "model_type")})
            model = transformers.Qwen2ForCausalLM(config).float()
            model.save_pretrained(d, safe_serialization=True)
            for extra in ("generation_config.json",):
                p = os.path.join(d, extra)
                if os.path.exists(p):
                    os.remove(p)
    print(f"wrote fixtures with transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
          f"torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
