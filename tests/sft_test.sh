#!/usr/bin/env bash
# SFT data (issue 18): chat messages, prompt/completion and pre-tokenized JSONL with loss masks.
#   sft_test.sh ULYSSES tokenize   ids and loss masks of `ulysses tokenize` equal to the
#                                  references of scripts/make_chat_fixtures.py (transformers'
#                                  apply_chat_template for messages: Llama 3, Qwen2 and plain
#                                  ChatML templates), document by document; malformed lines and
#                                  chat formats that cannot be used give one error naming them
#   sft_test.sh ULYSSES finetune   the commands of README "Fine-tune a Hugging Face model" on
#                                  the tiny Qwen2 model of tests/fixtures/chat_qwen2: the training
#                                  and held-out losses go down, eval_tokens is the number of
#                                  tokens with loss, --out holds config.json + model.safetensors
#   sft_test.sh ULYSSES mesh       10 steps on that SFT data (masks, documents cut at --seq-len)
#                                  on sp = 2, 4 and dp = 2 meshes equal one process (losses rel
#                                  1e-5, valid_tokens equal); one document per step: valid_tokens
#                                  is the document's tokens with loss
# Needs python3 (standard library only) to read the shards.
set -u
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")") # before any cd
BIN=$(readlink -f "$1")
CASE=$2
MPIRUN=${MPIRUN:-mpirun}
FIX=$HERE/fixtures
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
. "$HERE/testlib.sh"

# shard_check SHARD EXPECTED.jsonl: the shard's documents (ids, loss mask) equal the expected lines
shard_check() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"ULYSTOK1"
ver, vocab, nd, nt = struct.unpack_from("<IIQQ", b, 8)
off = struct.unpack_from(f"<{nd + 1}Q", b, 32)
at = 32 + 8 * (nd + 1)
toks = struct.unpack_from(f"<{nt}I", b, at)
mask = list(b[at + 4 * nt : at + 5 * nt]) if ver == 2 else [1] * nt
want = [json.loads(l) for l in open(sys.argv[2])]
bad = 0
for i in range(max(nd, len(want))):
    g = (list(toks[off[i] : off[i + 1]]), mask[off[i] : off[i + 1]]) if i < nd else None
    w = (want[i]["ids"], want[i]["mask"]) if i < len(want) else None
    if g != w:
        bad += 1
        print(f"  document {i}: got {g}\n  want {w}")
print(f"{sys.argv[1]}: version {ver}, {nd} documents, {nt} tokens, {sum(mask)} with loss mask 1, {bad} mismatches")
sys.exit(1 if bad else 0)
PY
}

# tok_error PATTERN ARGS...: `ulysses tokenize ARGS -o x.tok` fails with one error line holding PATTERN, no x.tok
tok_error() {
  local pat=$1; shift
  rm -f x.tok
  "$BIN" tokenize "$@" -o x.tok > o.txt 2> e.txt
  local rc=$?
  checks=$((checks + 1))
  if [ $rc -eq 0 ] || [ "$(grep -c 'ulysses: error' e.txt)" -ne 1 ] || ! grep -qF -- "$pat" e.txt || [ -e x.tok ]; then
    echo "FAIL: tokenize $* -> rc $rc, want '$pat':"; cat e.txt; fail=$((fail + 1))
  else
    grep "ulysses: error" e.txt | cut -c1-240
  fi
}

case "$CASE" in
tokenize)
  D=$FIX/chat_sft/data.jsonl
  for c in chat_llama3 chat_qwen2; do # chat format recognized from tokenizer_config.json
    "$BIN" tokenize --tokenizer "$FIX/$c" "$D" -o $c.tok 2> e.txt
    check $? "tokenize $c: $(cat e.txt)"
    grep "documents" e.txt
    shard_check $c.tok "$FIX/chat_sft/expected_$c.jsonl"
    check $? "$c: ids or loss mask differ from the reference"
  done
  "$BIN" tokenize --chat-format chatml --tokenizer "$FIX/chat_qwen2" "$D" -o chatml.tok 2> e.txt
  check $? "tokenize --chat-format chatml: $(cat e.txt)"
  shard_check chatml.tok "$FIX/chat_sft/expected_chatml.jsonl"
  check $? "chatml: ids or loss mask differ from the reference"
  # text only: no mask, a version 1 shard (as before)
  printf '{"text": "just text"}\n' > t.jsonl
  "$BIN" tokenize --tokenizer "$FIX/chat_qwen2" t.jsonl -o t.tok 2> e.txt
  check $([ "$(od -An -tu4 -j8 -N4 t.tok | tr -d ' ')" = 1 ]; echo $?) "a text-only shard is not version 1"
  # malformed lines: one error naming file:line, or skipped and counted
  printf '%s\n' '{"text": "ok"}' '{"messages": "hello"}' > bad1.jsonl
  tok_error 'bad1.jsonl:2: "messages" is not a non-empty array' --tokenizer "$FIX/chat_qwen2" bad1.jsonl
  printf '%s\n' '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}' > bad2.jsonl
  tok_error 'bad2.jsonl:1: messages[1] is not an object with string "role" and "content"' --tokenizer "$FIX/chat_qwen2" bad2.jsonl
  printf '%s\n' '' '{"prompt": "a"}' > bad3.jsonl
  tok_error 'bad3.jsonl:2: "prompt" and "completion" must both be strings' --tokenizer "$FIX/chat_qwen2" bad3.jsonl
  printf '%s\n' '{"input_ids": [1, 384]}' > bad4.jsonl
  tok_error 'bad4.jsonl:1: input_ids[1] is not an integer in [0, 383]' --tokenizer "$FIX/chat_qwen2" bad4.jsonl
  printf '%s\n' '{"input_ids": [1, 2], "labels": [-100]}' > bad5.jsonl
  tok_error 'bad5.jsonl:1: "labels" has 1 entries, "input_ids" 2' --tokenizer "$FIX/chat_qwen2" bad5.jsonl
  printf '%s\n' '{"input_ids": [1, 2], "labels": [-100, 3]}' > bad6.jsonl
  tok_error 'bad6.jsonl:1: labels[1] is 3: neither -100 nor input_ids[1] (2)' --tokenizer "$FIX/chat_qwen2" bad6.jsonl
  printf '%s\n' '{"input_ids": [1, 2.5]}' > bad7.jsonl
  tok_error 'bad7.jsonl:1: input_ids[1] is not an integer' --tokenizer "$FIX/chat_qwen2" bad7.jsonl
  printf '%s\n' '{"input_ids": [1, 2], "attention_mask": [1, 2]}' > bad8.jsonl
  tok_error 'bad8.jsonl:1: attention_mask[1] is not an integer in [0, 1]' --tokenizer "$FIX/chat_qwen2" bad8.jsonl
  cat bad1.jsonl bad3.jsonl bad4.jsonl bad6.jsonl "$D" > mixed.jsonl
  "$BIN" tokenize --skip-bad-lines --tokenizer "$FIX/chat_qwen2" mixed.jsonl -o mixed.tok 2> e.txt
  check $? "--skip-bad-lines: $(cat e.txt)"
  check $(grep -q "skipped 4 malformed JSONL line(s)" e.txt; echo $?) "--skip-bad-lines count: $(cat e.txt)"
  # mutated lines (bytes flipped, cut, keys swapped): skipped and counted, never a crash
  python3 - "$D" > fuzz.jsonl <<'PY'
import random, sys
r = random.Random(5)
lines = open(sys.argv[1], "rb").read().splitlines()
out = []
for i in range(400):
    b = bytearray(r.choice(lines))
    for _ in range(r.randint(1, 4)):
        k = r.randrange(len(b))
        op = r.randrange(3)
        if op == 0:
            b[k] = r.choice(b'{}[]",:-0123456789 \\ux\xff\x00')
        elif op == 1:
            del b[k:]
            if not b:
                b = bytearray(b"{")
        else:
            b[k:k] = r.choice([b'"role"', b'"content"', b'"labels"', b'-100', b'null', b'[]', b'{}', b'1e9'])
    out.append(bytes(b).replace(b"\n", b" "))
sys.stdout.buffer.write(b"\n".join(out) + b"\n")
PY
  "$BIN" tokenize --skip-bad-lines --tokenizer "$FIX/chat_qwen2" fuzz.jsonl -o fuzz.tok > o.txt 2> e.txt
  rc=$?
  echo "fuzz: rc $rc, $(grep -h 'skipped\|error' e.txt | cut -c1-160)"
  check $([ $rc -eq 0 ] || { [ $rc -eq 1 ] && [ "$(grep -c 'ulysses: error' e.txt)" -eq 1 ]; }; echo $?) \
    "mutated lines: rc $rc: $(tail -3 e.txt)"
  # chat formats: an unknown template, no tokenizer_config.json, a format whose tokens are missing
  mkdir -p other none
  cp "$FIX/chat_qwen2/tokenizer.json" other/ && cp "$FIX/chat_qwen2/tokenizer.json" none/
  printf '{"eos_token": "<|im_end|>", "chat_template": "{%% for m in messages %%}{{ m.content }}{%% endfor %%}"}\n' \
    > other/tokenizer_config.json
  tok_error "data.jsonl:1: messages need a chat format: other/tokenizer_config.json: its chat_template is not one ulysses formats natively" --tokenizer other "$D"
  tok_error "data.jsonl:1: messages need a chat format: none: no tokenizer_config.json beside the tokenizer (no chat_template): give --chat-format" --tokenizer none "$D"
  "$BIN" tokenize --chat-format chatml --tokenizer other "$D" -o x.tok 2> e.txt
  check $? "--chat-format chatml with an unknown template: $(cat e.txt)"
  shard_check x.tok "$FIX/chat_sft/expected_chatml.jsonl" > /dev/null
  check $? "--chat-format chatml on an unknown template differs from ChatML"
  tok_error "the llama3 chat format needs the token <|start_header_id|>, which this tokenizer does not have (--chat-format)" \
    --chat-format llama3 --tokenizer "$FIX/chat_qwen2" "$D"
  tok_error "--chat-format mistral: llama3 or chatml" --chat-format mistral --tokenizer "$FIX/chat_qwen2" "$D"
  ;;
finetune)
  # README "Fine-tune a Hugging Face model", on the tiny Qwen2 model directory
  MODEL=$FIX/chat_qwen2
  for i in 1 2 3 4 5 6 7 8; do cat "$FIX/chat_sft/data.jsonl"; done > train.jsonl
  cp "$FIX/chat_sft/data.jsonl" val.jsonl
  mkdir -p data
  "$BIN" tokenize --tokenizer "$MODEL" train.jsonl -o data/train.tok 2> e.txt
  check $? "tokenize train: $(cat e.txt)"
  "$BIN" tokenize --tokenizer "$MODEL" val.jsonl -o data/val.tok 2> e.txt
  check $? "tokenize val: $(cat e.txt)"
  OMP_NUM_THREADS=1 $MPIRUN -np 2 "$BIN" train --init "$MODEL" --data data/train.tok --eval-data data/val.tok \
    --eval-every 10 --seq-len 256 --sp 2 --batch 4 --steps 30 --lr 3e-3 --warmup 3 \
    --out out --metrics out/metrics.jsonl --quiet 2> e.txt
  check $? "train: $(cat e.txt)"
  cp "$MODEL"/tokenizer.json "$MODEL"/tokenizer_config.json out/
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    test -s out/$f; check $? "out/$f missing"
  done
  l0=$(sed -n 1p out/metrics.jsonl | sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/')
  l1=$(tail -n 1 out/metrics.jsonl | sed -e 's/.*"loss": \([-0-9.e+]*\).*/\1/')
  e1=$(sed -n 10p out/metrics.jsonl | sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/')
  e3=$(sed -n 30p out/metrics.jsonl | sed -e 's/.*"eval_loss": \([-0-9.e+]*\).*/\1/')
  nt=$(sed -n 30p out/metrics.jsonl | sed -e 's/.*"eval_tokens": \([0-9]*\).*/\1/')
  echo "finetune: training loss $l0 -> $l1, eval_loss $e1 (step 10) -> $e3 (step 30) over $nt tokens"
  check $(awk -v a="$l0" -v b="$l1" 'BEGIN { exit !(b < 0.8 * a) }'; echo $?) "training loss $l0 -> $l1 did not go down"
  check $(awk -v a="$e1" -v b="$e3" 'BEGIN { exit !(b < a) }'; echo $?) "eval_loss $e1 -> $e3 did not go down"
  # every token with loss mask 1 that is not its document's first is labelled once
  want=$(python3 - data/val.tok <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
ver, vocab, nd, nt = struct.unpack_from("<IIQQ", b, 8)
off = struct.unpack_from(f"<{nd + 1}Q", b, 32)
mask = b[32 + 8 * (nd + 1) + 4 * nt :]
print(sum(mask[i] for d in range(nd) for i in range(off[d] + 1, off[d + 1])))
PY
)
  check $([ -n "$nt" ] && [ "$nt" = "$want" ]; echo $?) "eval_tokens $nt, the held-out data has $want tokens with loss"
  ;;
mesh)
  MODEL=$FIX/chat_qwen2
  for i in 1 2 3 4; do cat "$FIX/chat_sft/data.jsonl"; done > train.jsonl
  "$BIN" tokenize --tokenizer "$MODEL" train.jsonl -o train.tok 2> e.txt
  check $? "tokenize: $(cat e.txt)"
  run() { # run NP OUT ARGS...
    local np=$1 out=$2; shift 2
    OMP_NUM_THREADS=1 $MPIRUN -np "$np" "$BIN" train --init "$MODEL" --data train.tok --seq-len 64 --batch 4 \
      --grad-accum 2 --steps 10 --lr 3e-3 --warmup 2 --seed 11 --metrics "$out" --quiet "$@"
    check $? "train np=$np $* failed"
  }
  run 1 ref.jsonl
  for mesh in "2 --sp 2" "4 --sp 4" "2 --dp-shard 2" "4 --sp 2 --dp-shard 2"; do
    set -- $mesh
    np=$1; shift
    run "$np" got.jsonl "$@"
    worst=$(paste -d' ' <(field ref.jsonl loss) <(field got.jsonl loss) |
            awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > w) w = r } END { printf "%.3g", w }')
    echo "mesh np=$np $*: 10-step losses worst rel diff $worst vs 1 process"
    check $([ "$(wc -l < got.jsonl)" -eq 10 ]; echo $?) "np=$np $*: not 10 metric lines"
    check $(awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }'; echo $?) "np=$np $*: losses differ by $worst > 1e-5"
    check $([ "$(field ref.jsonl valid_tokens)" = "$(field got.jsonl valid_tokens)" ]; echo $?) \
      "np=$np $*: valid_tokens differ from 1 process"
  done
  # one document per step, in file order: valid_tokens = its tokens with loss mask 1, first excluded
  OMP_NUM_THREADS=1 $MPIRUN -np 2 "$BIN" train --init "$MODEL" --data train.tok --seq-len 128 --batch 1 --sp 2 \
    --doc-per-sample --no-shuffle --steps 12 --lr 1e-3 --metrics one.jsonl --quiet
  check $? "train --doc-per-sample failed"
  want=$(python3 - train.tok <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
ver, vocab, nd, nt = struct.unpack_from("<IIQQ", b, 8)
off = struct.unpack_from(f"<{nd + 1}Q", b, 32)
mask = b[32 + 8 * (nd + 1) + 4 * nt :]
print(" ".join(str(sum(mask[off[d] + 1 : off[d + 1]])) for d in range(12)))
PY
)
  got=$(field one.jsonl valid_tokens | tr '\n' ' ' | sed -e 's/ $//')
  echo "valid_tokens per document: $got"
  check $([ "$got" = "$want" ]; echo $?) "valid_tokens per document $got, the shard's masks give $want"
  ;;
*)
  echo "unknown case $CASE"
  exit 2
  ;;
esac
echo "$checks checks, $fail failed"
[ $fail -eq 0 ]
