#!/usr/bin/env python3
"""Equality of `ulysses tokenize --tokenizer` with the Python `tokenizers` library.

    tokenizer_reference.py [--only=NAME,...] ULYSSES WORKDIR [REAL_TOKENIZER.json ...]

Writes a corpus with many scripts and edge cases into WORKDIR (plain text with invalid
UTF-8, blank-line blocks, JSONL), trains small tokenizers with `tokenizers` (byte-level BPE
with the Llama 3 / Qwen2 / GPT-2 split rules; SentencePiece-style BPE with byte fallback
and the Prepend+Replace normalizers or a Metaspace pre-tokenizer), then for each of them
and each REAL_TOKENIZER.json: tokenizes the corpus with ULYSSES and compares the ids
document by document with Tokenizer.encode, and --decode's text with Tokenizer.decode.
Prints one line per tokenizer (documents, tokens, mismatches); exits 1 on any mismatch.
Used by tests/tokenizer_test.sh; bench/tokenizer/ reuses make_corpus()."""
import json
import os
import random
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")

FRAGMENTS = [
    "The quick brown fox jumps over the lazy dog.", "I'm sure they'll say it's DON'T, we've, you'D, THEY'RE.",
    "Long-context training with Ulysses sequence parallelism splits the sequence over ranks.",
    "def f(x):\n\treturn {'a': [x ** 2 for x in range(10)]}  # comment\n",
    "int main(void) {\n    printf(\"%d\\n\", 42);\r\n    return 0;\n}\n", "    indented    with     runs   ",
    "汉字和中文标点，测试一下。北京欢迎你！", "日本語のテキスト、ひらがなとカタカナ。", "한국어 문장입니다. 안녕하세요!",
    "العربية نص تجريبي مع أرقام ١٢٣٤٥ وعلامات.", "עברית עם ניקוד: שָׁלוֹם", "हिन्दी पाठ परीक्षण के लिए",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "Русский текст и ёжик.", "Ελληνικά κείμενα με τόνους.",
    "emoji 😀😃😄 family 👨‍👩‍👧‍👦 flag 🏳️‍🌈 thumbs 👍🏽 👍🏿 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "combining: e\u0301 a\u0300 o\u0308 n\u0303 vs é à ö ñ; zalgo z\u0336\u0337\u0338a\u0334\u0335l\u0336g\u0337o",
    "Vietnamese: Tiếng Việt có dấu, người, được, ở, Nguyễn", "Kelvin \u212a Angstrom \u212b Ohm \u2126",
    "fullwidth ＡＢＣ１２３ ligature ﬁ ﬂ superscript x² roman Ⅻ circled ①②", "digits 1234567890123456789 3.14159 1,000,000 42",
    "whitespace:\u00a0nbsp\u3000ideographic\u2028line\u2029para\u0085nel\u180emongolian\u200bzwsp\u2009thin",
    "tabs\t\tand\t spaces \t mixed", "CRLF line one\r\nline two\r\n\r\nline four\rlone CR", "\u0000nul\u0001soh\u007fdel",
    "replacement \ufffd char and BOM \ufeff here", "math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕏 gothic 𐌰𐌱𐌲", "long s: 'ſ and 'S, 'LL, 'Ve",
    "<|begin_of_text|>Hello<|eot_id|> <|end_of_text|>", "<s> [INST] question [/INST] answer </s><unk>",
    "<｜begin▁of▁sentence｜>deepseek<｜end▁of▁sentence｜>", "<EOT><META>claude<SOS>", "<|begin_of partial <|eot_id",
    "<tool_call>{\"name\": \"f\"}</tool_call>", "été e\u0301te\u0301 ÉTÉ", "▁already▁metaspace▁ chars",
    "  leading spaces", "trailing spaces   ", "punctuation!!! ??? ... --- *** ((()))", "email a.b@c.de url https://x.y/z?q=1",
    "$100.00 €50 ¥1000 £5", "<0x41> looks like a byte token", "snake_case camelCase kebab-case SCREAMING_CASE",
    "fill the <mask> here, x<mask>y,  <mask>  and\u3000<mask>", "end [END]   next [END]\nline[END]",
    "cat concatenate cat. (cat) cats _cat cat_ 猫cat é\u0301cat", "<both>  <both>\t\t<both>x", "dog doggy hotdog dog",
]


def make_corpus(rng, n_docs):
    docs = []
    for _ in range(n_docs):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))]
        seps = [" ", "\n", "\r\n", "\t", "", "  ", "\n\n"]
        docs.append("".join(p + rng.choice(seps) for p in parts))
    return docs


def edge_docs(rng):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        "", " ", "\n", "a", "a" * 5000, "ab" * 3000, "".join(rng.choice(letters) for _ in range(20000)),
        "9" * 10000, " " * 3000 + "x", "\t" * 500, "\r\n" * 300, "😀" * 2000, "汉" * 3000, "e\u0301" * 1000,
        "<s>" * 50, "<|begin_of_text|>" * 20, "x" + " " * 1000 + "\n" * 10 + "y", "supercalifragilistic" * 300,
    ]


def blank_blocks(text):
    """Documents of --split-blank-lines (src/formats/tokens.c: ul_blank_line_blocks)."""
    docs, cur, lines = [], None, text.split("\n")
    pos = 0
    for ln in lines:
        start, end = pos, pos + len(ln)
        pos = end + 1
        if ln.strip(" \t\r") != "":
            if cur is None:
                cur = start
            last_end = end - 1 if ln.endswith("\r") else end
        elif cur is not None:
            docs.append(text[cur:last_end])
            cur = None
    if cur is not None:
        docs.append(text[cur:last_end])
    return docs


INVALID = [b"\x80", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf5", b"\xff", b"\xf0\x9f\x98", b"\xe0\x80\x80",
           b"\xf4\x90\x80\x80", b"\xc3"]


def write_inputs(work, rng):
    """Returns [(args, [expected document texts])] for the tokenize runs."""
    docs = make_corpus(rng, 300)
    runs = []
    # 1. blank-line blocks in one text file + a JSONL file with "text"
    blocks = docs[:120]
    raw = "\n\n".join(d.replace("\n\n", "\n") for d in blocks).encode()
    raw = raw.replace(b"dog.", b"dog.\xff\xfe")  # invalid bytes inside documents
    with open(os.path.join(work, "blocks.txt"), "wb") as f:
        f.write(raw)
    jl = docs[120:240] + edge_docs(rng)
    with open(os.path.join(work, "corpus.jsonl"), "wb") as f:
        for i, d in enumerate(jl):
            line = json.dumps({"id": i, "text": d}, ensure_ascii=bool(i % 2))
            f.write(line.encode("utf-8", "surrogatepass") + (b"\r\n" if i % 7 == 0 else b"\n"))
            if i % 50 == 0:
                f.write(b"\n")  # blank lines are ignored
        f.write(b'{"text": "raw invalid \xc3\x28 \xa0\xa1 bytes"}\n')
    expect1 = blank_blocks(raw.decode("utf-8", "replace")) + jl + ["raw invalid \ufffd( \ufffd\ufffd bytes"]
    runs.append((["--split-blank-lines", "blocks.txt", "corpus.jsonl"], expect1))
    # 2. whole files (one with every kind of invalid UTF-8, one empty) + JSONL via --field
    files, expect2 = [], []
    for i, d in enumerate(docs[240:270]):
        b = d.encode()
        if i % 3 == 0:
            b = b[: len(b) // 2] + rng.choice(INVALID) + b[len(b) // 2:]
        if i == 5:
            b = b"".join(INVALID) + b + b"".join(INVALID)
        if i == 7:
            b = b""
        name = f"doc{i:02d}.txt"
        with open(os.path.join(work, name), "wb") as f:
            f.write(b)
        files.append(name)
        expect2.append(b.decode("utf-8", "replace"))
    with open(os.path.join(work, "content.jsonl"), "w", encoding="utf-8") as f:
        for d in docs[270:]:
            f.write(json.dumps({"content": d, "text": 0}) + "\n")
    runs.append((["--field", "content"] + files + ["content.jsonl"], expect2 + docs[270:]))
    return docs, runs


def trained(work, docs):
    """Small tokenizers trained here: {name: (path to pass to ulysses, reference Tokenizer)}."""
    out = {}
    # byte-level BPE, Llama 3 style
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    base = json.loads(tok.to_str())

    def save(name, j, config=None):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        if config:
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
        ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        out[name] = (d, ref, [])
        return d, ref

    def added(content, id_, special, normalized=False):
        return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": normalized, "special": special}

    def js(obj):
        return json.loads(obj.__getstate__() if hasattr(obj, "__getstate__") else obj)

    n = max(base["model"]["vocab"].values()) + 1
    llama3 = json.loads(json.dumps(base))
    llama3["model"]["ignore_merges"] = True
    llama3["added_tokens"].append(added("<tool_call>", n, False))
    llama3["added_tokens"].append(added("</tool_call>", n + 1, False))
    bos = llama3["model"]["vocab"].get("<|begin_of_text|>")
    t = Tokenizer.from_str(json.dumps(llama3))
    t.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                     special_tokens=[("<|begin_of_text|>", bos)])
    save("bl_llama3", json.loads(t.to_str()))

    qwen = json.loads(json.dumps(base))
    t = Tokenizer.from_str(json.dumps(qwen))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    j = json.loads(t.to_str())
    j["added_tokens"].append(added("e\u0301te\u0301", n, False, normalized=True))  # matched in NFC form
    j["added_tokens"].append(added("<tool_call>", n + 1, False))
    save("bl_qwen", j)

    strip = json.loads(json.dumps(llama3))  # added tokens with single_word / lstrip / rstrip
    for k, (content, sw, ls, rs, norm) in enumerate([("<mask>", False, True, False, False),
                                                      ("[END]", False, False, True, False),
                                                      ("cat", True, False, False, False),
                                                      ("<both>", False, True, True, False),
                                                      ("dog", True, True, True, True)]):
        tok_ = added(content, n + 2 + k, k % 2 == 0, normalized=norm)
        tok_.update(single_word=sw, lstrip=ls, rstrip=rs)
        strip["added_tokens"].append(tok_)
    strip["normalizer"] = {"type": "NFC"}
    ids = Tokenizer.from_str(json.dumps(strip))  # the ids tokenizers gives them ("cat": its vocabulary id)
    for a in strip["added_tokens"]:
        a["id"] = ids.token_to_id(a["content"])
    save("bl_strip", strip)

    t = Tokenizer.from_str(json.dumps(base))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.post_processor = processors.ByteLevel(trim_offsets=True)
    t.normalizer = normalizers.NFKC()
    save("bl_gpt2", json.loads(t.to_str()))

    t = Tokenizer.from_str(json.dumps(base))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\p{P}"), behavior="merged_with_next"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex(r"\t+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="contiguous", invert=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Replace(Regex(r"\s{2,}"), " "),
                                         normalizers.NFKD()])
    save("bl_misc", json.loads(t.to_str()))

    # SentencePiece-style BPE with byte fallback (Llama 2 / Mistral)
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=2500, special_tokens=["<unk>", "<s>", "</s>"],
                                                      limit_alphabet=120, show_progress=False))
    sp = json.loads(tok.to_str())
    old = sp["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for k, v in sorted(old.items(), key=lambda kv: kv[1]):
        if k not in vocab:
            vocab[k] = len(vocab)
    sp["model"]["vocab"] = vocab
    sp["model"]["byte_fallback"] = True
    for a in sp["added_tokens"]:
        a["id"] = vocab[a["content"]]
    tpl = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                     {"Sequence": {"id": "A", "type_id": 0}}],
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    legacy = json.loads(json.dumps(sp))
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    legacy["pre_tokenizer"] = None
    legacy["post_processor"] = tpl
    legacy["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    # --bos-eos config: BOS and EOS from tokenizer_config.json instead of the post-processor's BOS
    d, _ = save("sp_legacy", legacy, {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True,
                                      "add_eos_token": True, "bos_token": "<s>",
                                      "eos_token": {"content": "</s>", "lstrip": False}})
    ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ref.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0 </s>:0", pair="<s> $A </s> <s> $B </s>",
                                                       special_tokens=[("<s>", 1), ("</s>", 2)])
    out["sp_legacy_config"] = (d, ref, ["--bos-eos", "config"])
    meta = json.loads(json.dumps(sp))
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    meta["post_processor"] = tpl
    meta["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    save("sp_metaspace", meta)
    split = json.loads(json.dumps(sp))
    split["normalizer"] = {"type": "NFKC"}
    split["post_processor"] = None
    split["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    save("sp_metaspace_split", split)
    return out


def read_shard(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"ULYSTOK1", path
    _, vocab, nd, nt = struct.unpack_from("<IIQQ", b, 8)
    off = struct.unpack_from(f"<{nd + 1}Q", b, 32)
    toks = struct.unpack_from(f"<{nt}I", b, 32 + 8 * (nd + 1))
    return vocab, [list(toks[off[i]:off[i + 1]]) for i in range(nd)]


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def check(binary, work, name, path, ref, extra, runs):
    """Returns (ok, report lines) for one tokenizer."""
    log, docs, toks, bad, dbad = [], 0, 0, 0, 0
    shards, got_all = [], []
    for k, (args, texts) in enumerate(runs):
        shard = os.path.join(work, f"{name}.{k}.tok")
        files = [os.path.join(work, a) for a in args if a.endswith((".txt", ".jsonl"))]
        flags = [a for a in args if not a.endswith((".txt", ".jsonl"))]
        r = run([binary, "tokenize", "--tokenizer", path] + files + flags + extra + ["-o", shard])
        if r.returncode != 0:
            return False, [f"{name}: tokenize failed: {r.stderr.strip()}"]
        vocab, got = read_shard(shard)
        want = [e.ids for e in ref.encode_batch(texts)]
        if len(got) != len(want):
            return False, [f"{name}: run {k}: {len(got)} documents, expected {len(want)}"]
        if vocab != ref.get_vocab_size(with_added_tokens=True):
            log.append(f"{name}: shard vocab_size {vocab}, tokenizers says {ref.get_vocab_size(True)}")
            bad += 1
        for i, (g, w) in enumerate(zip(got, want)):
            docs += 1
            toks += len(w)
            if g != w:
                bad += 1
                j = first_diff(g, w)
                if bad <= 3:
                    log.append(f"{name}: run {k} doc {i}: first difference at token {j}: got {g[j:j + 8]} expected "
                               f"{w[j:j + 8]}")
        shards.append(shard)
        got_all += got
    for keep in (False, True):  # --decode of both shards at once, against Tokenizer.decode
        out = os.path.join(work, f"{name}.decoded{'.keep' if keep else ''}.jsonl")
        r = run([binary, "tokenize", "--decode", "--jsonl", "--tokenizer", path] + shards + ["-o", out] +
                (["--keep-special"] if keep else []))
        if r.returncode != 0:
            return False, log + [f"{name}: decode failed: {r.stderr.strip()}"]
        with open(out, encoding="utf-8") as f:
            dec = [json.loads(line)["text"] for line in f]
        wd = ref.decode_batch(got_all, skip_special_tokens=not keep)
        dbad += abs(len(dec) - len(wd))
        bad_docs = [i for i, (g, w) in enumerate(zip(dec, wd)) if g != w]
        dbad += len(bad_docs)
        for i in bad_docs[:3]:
            j = first_diff(dec[i], wd[i])
            log.append(f"{name}: decode (keep_special={keep}) doc {i} differs at char {j}: got {dec[i][j:j + 30]!r} "
                       f"expected {wd[i][j:j + 30]!r}")
    log.append(f"{name}: {docs} documents, {toks} tokens, {bad} mismatched documents; "
               f"decode (special tokens skipped and kept): {2 * len(got_all)} documents, {dbad} mismatches")
    return bad == 0 and dbad == 0, log


def check_errors(binary, work, path):
    """Malformed JSONL: one error naming file:line, or skipped and counted."""
    bad = os.path.join(work, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n{"other": 1}\n')
    out = os.path.join(work, "bad.tok")
    r = run([binary, "tokenize", "--tokenizer", path, bad, "-o", out])
    ok = r.returncode != 0 and f"{bad}:3: not valid JSON" in r.stderr and not os.path.exists(out)
    r2 = run([binary, "tokenize", "--tokenizer", path, bad, "-o", out, "--skip-bad-lines"])
    ok2 = r2.returncode == 0 and "skipped 2 malformed JSONL line(s)" in r2.stderr and len(read_shard(out)[1]) == 2
    print(f"malformed JSONL: error names file:line: {ok}; --skip-bad-lines skips and counts: {ok2}")
    if not (ok and ok2):
        print(r.stderr, r2.stderr)
    # unsupported tokenizer.json features: one error naming the field and value, no shard
    with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
        base = json.load(f)
    cases = []
    j = json.loads(json.dumps(base))
    j["normalizer"] = {"type": "Lowercase"}
    cases.append((j, 'normalizer.type "Lowercase" is not supported'))
    j = json.loads(json.dumps(base))
    j["model"]["dropout"] = 0.1
    cases.append((j, "model.dropout 0.1 is not supported"))
    j = json.loads(json.dumps(base))
    j["added_tokens"][0]["id"] = 7
    cases.append((j, "added_tokens[0] (\"<|begin_of_text|>\") has id 7, but tokenizers gives it id 0"))
    j = json.loads(json.dumps(base))
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+"
    cases.append((j, "regex escape \\w is not supported"))
    j = json.loads(json.dumps(base))
    j["model"]["type"] = "Unigram"
    cases.append((j, 'model.type "Unigram" is not supported'))
    cases.append((None, "not valid JSON"))
    ok3 = True
    for k, (j, want) in enumerate(cases):
        tj = os.path.join(work, f"unsupported{k}.json")
        with open(tj, "w", encoding="utf-8") as f:
            f.write(json.dumps(j) if j is not None else json.dumps(base)[:1000])
        r = run([binary, "tokenize", "--tokenizer", tj, bad, "-o", out + ".x"])
        good = r.returncode != 0 and want in r.stderr and tj in r.stderr and not os.path.exists(out + ".x")
        if not good:
            print(f"unsupported feature {k}: expected an error with {want!r}, got rc {r.returncode}: {r.stderr.strip()}")
        ok3 &= good
    print(f"unsupported tokenizer.json features: one error naming the field: {ok3}")
    return ok and ok2 and ok3


def main():
    args = sys.argv[1:]
    only = None
    if args and args[0].startswith("--only="):  # a subset of the tokenizers, by name
        only = set(args.pop(0)[len("--only="):].split(","))
    binary, work, reals = args[0], args[1], args[2:]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(1234)
    docs, runs = write_inputs(work, rng)
    toks = trained(work, docs)
    for p in reals:
        toks[os.path.basename(p).replace(".json", "")] = (p, Tokenizer.from_file(p), [])
    if only:
        assert only <= set(toks), f"--only: unknown {only - set(toks)}"
        toks = {k: v for k, v in toks.items() if k in only or k == "bl_llama3"}
    ok = True
    with ThreadPoolExecutor(4) as pool:  # each ulysses run mostly waits for MPI to start
        for good, log in pool.map(lambda kv: check(binary, work, kv[0], *kv[1], runs), toks.items()):
            print("\n".join(log), flush=True)
            ok &= good
    ok &= check_errors(binary, work, toks["bl_llama3"][0])
    print("tokenizer equality:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
