#!/usr/bin/env python3
"""bench/maxseq: the largest trainable sequence for a model shape on G GPUs (sp = G), ulysses
next to the PyTorch peer (issue 8). Not a test: it measures.

Run on the GPU machine from the repository root after building build-gpu/ (scripts/gpu_test.sh):

    python3 bench/maxseq.py --gpus 2 --budget-s 540 --json bench/maxseq.jsonl
    python3 bench/maxseq.py --gpus 2 --what peer --budget-s 540 --json bench/maxseq.jsonl

Phases (--what, default plan,ours,peer):

  plan  `ulysses plan` gives the largest --seq-len that fits --gpu-mem and --host-mem with
        the memory options (--opts, default: --checkpoint 1 --checkpoint-every auto
        --offload-checkpoints --offload-layers auto --zero 3 --offload-optimizer
        --offload-gradients auto --offload-params auto --tiled-mlp auto: the smallest checkpoint
        spacing that fits, as many units' gradients and then kept checkpoints on the host as
        --host-mem holds beside the optimizer state, the weights there only when that is what
        makes it fit). Recorded with the plan's choices at that length
        (tiled_mlp, ckpt_every, ckpt_offload, grads_host, params_host); train makes its own at each length.
  ours  one training step (--steps) at that length; on failure (refused, out of memory,
        killed, timeout) a bisection down to the largest length that trains, within --tol;
        then one step at each fraction of it in --below (default 0.75,0.5). Recorded per
        point: step_s, gpu_mem_gib (device memory in use, cudaMemGetInfo), alloc_peak_gib
        (the backend's allocation peak), plan_gib.
  peer  bench/peer/ulysses_peer.py under torchrun on the same GPUs, one step per probe:
        from --peer-start doubling while it trains, then bisection between the last length
        that trained and the first that did not (--peer-lo / --peer-hi continue an earlier
        search). Recorded: step_s, peak reserved and allocated GiB.

Time: everything stops before --budget-s (the GPU machine gives 10 minutes per call):
every probe gets at most the time left (and --probe-timeout), no probe starts with less
than --min-probe-s left, and a timed-out probe is killed with its process group. The table
is printed and one JSON object appended to --json whatever happened (also on SIGTERM or
Ctrl-C). Split the work over calls with --what, --ours-hi and --peer-lo/--peer-hi.

The model: a shape of the peer's SHAPES (default llama-3.1-8b: hidden 4096, 32 layers, 32
heads, 8 kv heads, intermediate 14336, vocab 128256, untied), random weights, random
tokens, one document of exactly seq_len tokens per step.

CPU check of the logic (no GPU; tests/bench.cmake runs it with a stand-in peer):

    python3 bench/maxseq.py --device cpu --bin build/ulysses --shape tiny --gpus 2 \\
        --gpu-mem 0.05 --granule 16 --opts "--checkpoint 1 --tiled-mlp auto" \\
        --peer-start 256 --peer-script tests/maxseq_peer_stub.py --budget-s 120
"""
import argparse
import array
import ast
import json
import os
import random
import re
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer", "ulysses_peer.py")
DEFAULT_OPTS = ("--checkpoint 1 --checkpoint-every auto --offload-checkpoints --offload-layers auto --zero 3 "
                "--offload-optimizer --offload-gradients auto --offload-params auto --tiled-mlp auto")


class OutOfTime(Exception):
    pass


def peer_shapes(path):
    """The peer's SHAPES, read from its source (no torch needed here)."""
    tree = ast.parse(open(path).read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SHAPES" for t in node.targets):
            return eval(compile(ast.Expression(node.value), path, "eval"), {"__builtins__": {}, "dict": dict})
    sys.exit(f"maxseq: no SHAPES in {path}")


def write_config(shape, path):
    """An HF config.json for ulysses with the peer's shape."""
    s = dict(shape)
    rope = dict(s.pop("rope_parameters"))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_theta": rope.pop("rope_theta"),
           "rope_scaling": rope}
    cfg.update(s)
    with open(path, "w") as f:
        json.dump(cfg, f)


def write_tokens(path, vocab, seq_len, n_docs):
    """A token shard (docs/formats.md) of n_docs random documents of seq_len tokens."""
    rng = random.Random(seq_len)
    toks = array.array("I", (rng.randrange(1, vocab) for _ in range(seq_len * n_docs)))
    offs = array.array("Q", (i * seq_len for i in range(n_docs + 1)))
    if sys.byteorder != "little":
        toks.byteswap()
        offs.byteswap()
    with open(path, "wb") as f:
        f.write(b"ULYSTOK1" + struct.pack("<IIQQ", 1, vocab, n_docs, len(toks)))
        offs.tofile(f)
        toks.tofile(f)


class Clock:
    def __init__(self, budget_s, min_probe_s, probe_timeout):
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.min_probe_s, self.probe_timeout = min_probe_s, probe_timeout

    def left(self):
        return self.deadline - time.monotonic()

    def probe_limit(self):
        left = self.left()
        if left < self.min_probe_s:
            raise OutOfTime()
        return min(left, self.probe_timeout)


def run_limited(cmd, limit_s, log_path, env=None):
    """Runs cmd in its own process group for at most limit_s; (rc or None on timeout, wall s, log tail)."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=limit_s)
        except BaseException:  # timeout, or SIGTERM / Ctrl-C of this script: end the probe's processes
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            if sys.exc_info()[0] is not subprocess.TimeoutExpired:
                raise
            rc = None
    with open(log_path, errors="replace") as f:
        tail = f.read()[-4000:]
    return rc, time.monotonic() - t0, tail


def failure(rc, tail):
    if rc is None:
        return "timeout"
    if "does not fit" in tail or "memory plan:" in tail:
        return "refused by the plan"
    if re.search(r"out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation", tail, re.I):
        return "out of memory"
    if rc < 0 or rc in (137, 139):
        return f"killed (rc {rc}; host out of memory?)"
    lines = [l.strip() for l in tail.splitlines() if l.strip() and not set(l.strip()) <= set("-=")]
    ours = [l for l in lines if re.match(r"ulysses: (fatal|error)", l)]  # the program's own message, not MPI's
    last = (ours or lines)[-1:] or [""]
    return f"error (rc {rc}): {last[0][:160]}"


def down(x, g):
    return x // g * g


class Bench:
    def __init__(self, a, work, clock):
        self.a, self.work, self.clock = a, work, clock
        self.sp = a.gpus
        self.unit = a.granule * a.gpus  # every length is a multiple of granule x sp
        shapes = peer_shapes(a.peer_shapes_from)
        if a.shape not in shapes:
            sys.exit(f"maxseq: --shape {a.shape}: not one of {', '.join(shapes)}")
        self.shape = shapes[a.shape]
        self.cfg = os.path.join(work, "config.json")
        write_config(self.shape, self.cfg)
        self.opts = shlex.split(a.opts)
        host = ["--host-mem", str(a.host_mem)] if a.host_mem else []
        self.mem = (["--gpu-mem", str(a.gpu_mem)] if a.gpu_mem else []) + host  # plan
        train_gpu = a.train_gpu_mem or a.gpu_mem
        self.train_mem = (["--gpu-mem", str(train_gpu)] if train_gpu else []) + host
        self.n = 0
        self.res = {"bench": "maxseq", "shape": a.shape, "gpus": a.gpus, "sp": a.gpus, "device": a.device,
                    "opts": a.opts, "gpu_mem_gib": a.gpu_mem, "host_mem_gib": a.host_mem, "steps": a.steps,
                    "budget_s": a.budget_s, "what": a.what}

    # ---- plan ----
    def plan(self, seq_len, extra=()):
        cmd = [self.a.bin, "plan", "--model", self.cfg, "--gpus", str(self.sp), "--sp", str(self.sp),
               "--seq-len", str(seq_len), "--device", self.a.device] + self.opts + self.mem + list(extra)
        try:  # a pure calculation: seconds, but give a loaded machine its time
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, min(120, self.clock.left())))
        except subprocess.TimeoutExpired:
            raise OutOfTime()
        if r.returncode not in (0, 2):  # 2: the plan does not fit (a result, not an error)
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        m = re.search(r"^largest seq_len that fits: (\d+)", r.stdout, re.M)
        tot = re.search(r"^per (?:GPU|rank) total: +([\d.]+) GiB", r.stdout, re.M)
        if not m:
            raise RuntimeError(f"{' '.join(cmd)}: no memory limit to plan against (give --gpu-mem)")
        mlp = re.search(r"tiled-mlp ([^,]+),", r.stdout)
        # the plan's other choices at this length (header lines of `ulysses plan`)
        ch = {}
        for key, pat in (("ckpt_every", r", every (?:auto: )?(\d+) layers"), ("ckpt_offload", r"\(offloaded: ([^)]+)\)"),
                         ("grads_host", r"^gradients in host memory: ([^;\n]+)"),
                         ("params_host", r"; weights in host memory: (.+)$")):
            g = re.search(pat, r.stdout, re.M)
            if g:
                ch[key] = int(g.group(1)) if key == "ckpt_every" else g.group(1)
        return int(m.group(1)), float(tot.group(1)), mlp.group(1) if mlp else None, ch

    def run_plan(self):
        t_max, _, _, _ = self.plan(self.unit)
        out = {"max_seq_len": t_max}
        if t_max > 0:
            _, gib, mlp, ch = self.plan(t_max)
            out.update(plan_gib=gib, tiled_mlp=mlp, **ch)
        self.res["plan"] = out
        return t_max

    # ---- ours ----
    def ours_probe(self, T):
        self.n += 1
        tag = f"ours-{self.n}"
        shard, metrics = os.path.join(self.work, "tokens.tok"), os.path.join(self.work, tag + ".jsonl")
        write_tokens(shard, self.shape["vocab_size"], T, self.a.steps)
        launch = shlex.split(self.a.mpirun) + ["-np", str(self.sp), "--bind-to", "none"]  # the CPU AdamW's threads
        if self.a.device == "cuda":
            launch += ["-x", "NCCL_NVLS_ENABLE=0"]
        cmd = launch + [self.a.bin, "train", "--device", self.a.device, "--model", self.cfg, "--data", shard,
                        "--seq-len", str(T), "--fixed-len", "--doc-per-sample", "--no-shuffle", "--sp", str(self.sp),
                        "--batch", "1", "--steps", str(self.a.steps), "--lr", "1e-5", "--metrics", metrics,
                        "--quiet"] + self.opts + self.train_mem + shlex.split(self.a.train_extra)
        rc, wall, tail = run_limited(cmd, self.clock.probe_limit(), os.path.join(self.work, tag + ".log"))
        rows = []
        if os.path.exists(metrics):
            rows = [json.loads(l) for l in open(metrics) if l.strip()]
        pt = {"seq_len": T, "wall_s": round(wall, 1)}
        if rc == 0 and len(rows) == self.a.steps:
            last = rows[-1]
            pt.update(ok=True, step_s=last["step_s"], step_s_all=[r["step_s"] for r in rows],
                      gpu_mem_gib=last.get("gpu_mem_gib"), alloc_peak_gib=last.get("alloc_peak_gib"),
                      plan_gib=last.get("plan_gib"), loss=last.get("loss"))
        else:
            pt.update(ok=False, why=failure(rc, tail))
            if self.a.device == "cuda":
                time.sleep(5)  # an aborted job's device and pinned host memory are released after it exits
        self.log("ours", pt)
        return pt

    def search(self, o, probe, T, lo, hi, double):
        """Probes from T: up by doubling (double) until the first failure, then bisection
        between lo (trained) and hi (failed) to within --tol; o gets the points and the bracket."""
        o["max_ok"], o["first_fail"] = lo, hi
        while T > lo and (hi is None or T < hi):
            pt = probe(T)
            o["points"].append(pt)
            if pt["ok"]:
                lo = T
            else:
                hi = T
            o["max_ok"], o["first_fail"] = lo, hi
            if hi is None and double:
                T = 2 * T
            elif hi is None or hi - lo <= max(self.unit, self.a.tol * hi):
                break
            else:
                T = down((lo + hi) // 2, self.unit)
        return lo

    def run_ours(self, t_plan):
        o = self.res.setdefault("ours", {"points": []})
        hi = self.a.ours_hi or None  # a length known to fail (an earlier call)
        # the plan's maximum first; nothing above it is tried (train would refuse it)
        T = down(min(t_plan, hi - self.unit) if hi else t_plan, self.unit)
        lo = self.search(o, self.ours_probe, T, 0, hi, False)
        for f in self.a.below:
            T = down(int(lo * f), self.unit)
            if T > 0:
                o["points"].append(self.ours_probe(T))

    # ---- peer ----
    def peer_probe(self, T):
        self.n += 1
        tag = f"peer-{self.n}"
        out = os.path.join(self.work, tag + ".json")
        launch = shlex.split(self.a.peer_launcher.format(gpus=self.sp))
        cmd = launch + [self.a.peer_script, "--model-shape", self.a.shape, "--seq-len", str(T), "--steps",
                        str(self.a.steps), "--warmup-steps", "0", "--attn", self.a.peer_attn, "--device",
                        self.a.device, "--json", out]
        rc, wall, tail = run_limited(cmd, self.clock.probe_limit(), os.path.join(self.work, tag + ".log"))
        pt = {"seq_len": T, "wall_s": round(wall, 1)}
        if rc == 0 and os.path.exists(out):
            r = json.load(open(out))
            pt.update(ok=True, step_s=r["step_s_mean"], peak_reserved_gib=r.get("peak_reserved_gib_max"),
                      peak_alloc_gib=r.get("peak_mem_gib_max"), loss=r.get("loss_last"))
        else:
            pt.update(ok=False, why=failure(rc, tail))
        self.log("peer", pt)
        return pt

    def run_peer(self):
        o = self.res.setdefault("peer", {"points": []})
        lo, hi = self.a.peer_lo, self.a.peer_hi or None
        if hi:
            T = down((lo + hi) // 2, self.unit)
        else:
            T = 2 * lo if lo else max(self.unit, down(self.a.peer_start, self.unit))
        self.search(o, self.peer_probe, T, lo, hi, True)

    def log(self, who, pt):
        what = (f"ok, step {pt['step_s']:.2f} s" if pt["ok"] else pt["why"])
        print(f"maxseq: {who} T={pt['seq_len']}: {what} ({pt['wall_s']:.0f} s, {self.clock.left():.0f} s left)",
              flush=True)


def table(res):
    lines = [f"\n{res['shape']} on {res['gpus']} GPU(s) (sp {res['sp']}, {res['device']}), opts: {res['opts']}"]
    if "plan" in res:
        p = res["plan"]
        lines.append(f"plan: largest seq_len {p['max_seq_len']}"
                     + (f" ({p['plan_gib']:.1f} GiB per GPU, tiled-mlp {p['tiled_mlp']}"
                        + (f", checkpoint every {p['ckpt_every']} layers" if "ckpt_every" in p else "")
                        + (f", checkpoints offloaded {p['ckpt_offload']}" if "ckpt_offload" in p else "")
                        + (f", gradients on host {p['grads_host']}" if "grads_host" in p else "")
                        + (f", weights on host {p['params_host']}" if "params_host" in p else "") + ")"
                        if "plan_gib" in p else ""))
    lines.append(f"{'who':5} {'seq_len':>9} {'result':30} {'step_s':>8} {'tok/s':>9} {'mem GiB':>8} {'plan GiB':>8}")
    for who in ("ours", "peer"):
        for pt in res.get(who, {}).get("points", []):
            if pt["ok"]:
                mem = pt.get("gpu_mem_gib") or pt.get("peak_reserved_gib") or pt.get("alloc_peak_gib")
                lines.append(f"{who:5} {pt['seq_len']:>9} {'ok':30} {pt['step_s']:>8.2f} "
                             f"{pt['seq_len'] / pt['step_s']:>9.0f} {mem if mem is not None else float('nan'):>8.2f} "
                             f"{pt.get('plan_gib') or float('nan'):>8.2f}")
            else:
                lines.append(f"{who:5} {pt['seq_len']:>9} {pt['why'][:30]:30}")
        if who in res:
            lines.append(f"{who}: largest that trained {res[who].get('max_ok')}, first failure "
                         f"{res[who].get('first_fail')}")
    lines.append(f"stopped: {res.get('stopped')}, {res.get('elapsed_s')} s of {res['budget_s']}")
    return "\n".join(lines)


def nvidia_gib():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return min(float(x) for x in out) / 1024 - 1.0 if out else None  # cudaMemGetInfo reports a bit less
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def host_gib():
    with open("/proc/meminfo") as f:
        kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return round(kb / 2**20 * 0.9, 1)  # leave a tenth to the system


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=1, help="GPUs = ranks = sp (default 1)")
    p.add_argument("--shape", default="llama-3.1-8b", help="a shape of the peer's SHAPES (default llama-3.1-8b)")
    p.add_argument("--what", default="plan,ours,peer", help="phases: plan, ours, peer (comma-separated)")
    p.add_argument("--budget-s", type=float, default=540, help="total seconds for everything (default 540)")
    p.add_argument("--probe-timeout", type=float, default=420, help="seconds at most per probe (default 420)")
    p.add_argument("--min-probe-s", type=float, default=30, help="no probe starts with less time left (default 30)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--bin", default="build-gpu/ulysses")
    p.add_argument("--mpirun", default="mpirun", help="the MPI launcher command (default mpirun)")
    p.add_argument("--opts", default=DEFAULT_OPTS, help=f"memory options for plan and train (default: {DEFAULT_OPTS})")
    p.add_argument("--train-extra", default="", help="more flags for train only")
    p.add_argument("--gpu-mem", type=float, help="GiB per GPU for plan and train (default: nvidia-smi's total - 1)")
    p.add_argument("--train-gpu-mem", type=float,
                   help="GiB per GPU for train only (default --gpu-mem); less than --gpu-mem makes train refuse "
                        "the plan's maximum: the CPU check of the bisection")
    p.add_argument("--host-mem", type=float, help="GiB of host memory (default: 0.9 x MemTotal)")
    p.add_argument("--steps", type=int, default=1, help="training steps per probe (default 1)")
    p.add_argument("--granule", type=int, default=1024, help="lengths are multiples of granule x sp (default 1024)")
    p.add_argument("--tol", type=float, default=0.05, help="bisection stops within this fraction (default 0.05)")
    p.add_argument("--below", default="0.75,0.5", help="fractions of the largest length also run (default 0.75,0.5)")
    p.add_argument("--ours-hi", type=int, default=0, help="a length known to fail for ours: start below it")
    p.add_argument("--peer-start", type=int, default=32768, help="the peer's first length (default 32768)")
    p.add_argument("--peer-lo", type=int, default=0, help="a length the peer trained (continue a search)")
    p.add_argument("--peer-hi", type=int, default=0, help="a length the peer failed (continue a search)")
    p.add_argument("--peer-attn", default="flash", help="the peer's SDPA backend (default flash)")
    p.add_argument("--peer-script", default=PEER, help="the peer (default bench/peer/ulysses_peer.py)")
    p.add_argument("--peer-launcher", default="torchrun --standalone --nproc-per-node {gpus}",
                   help="command before the peer script ({gpus} is replaced)")
    p.add_argument("--peer-shapes-from", default=PEER, help=argparse.SUPPRESS)
    p.add_argument("--json", help="append the result (one JSON object) to this file")
    p.add_argument("--keep", help="keep the work directory (configs, logs, metrics) here")
    a = p.parse_args(argv)
    a.what = [w.strip() for w in a.what.split(",") if w.strip()]
    bad = [w for w in a.what if w not in ("plan", "ours", "peer")]
    if bad or not a.what:
        p.error(f"--what {','.join(bad)}: expected plan, ours, peer")
    a.below = [float(x) for x in a.below.split(",") if x.strip()]
    if a.gpus < 1 or a.steps < 1 or a.granule < 1 or a.budget_s <= 0:
        p.error("--gpus, --steps, --granule must be >= 1 and --budget-s > 0")
    if a.device == "cuda" and not a.gpu_mem:
        a.gpu_mem = nvidia_gib()
    if not a.gpu_mem and ("plan" in a.what or "ours" in a.what):
        p.error("--gpu-mem: required on the CPU (and where nvidia-smi cannot tell)")
    if a.host_mem is None:
        a.host_mem = host_gib()
    return a


def main(argv=None):
    a = parse_args(argv)
    clock = Clock(a.budget_s - 5, a.min_probe_s, a.probe_timeout)  # 5 s to print and write

    def on_term(signum, frame):
        raise OutOfTime()

    signal.signal(signal.SIGTERM, on_term)
    work = a.keep or tempfile.mkdtemp(prefix="maxseq-")
    os.makedirs(work, exist_ok=True)
    b = Bench(a, work, clock)
    stopped = "done"
    try:
        t_plan = 0
        if "plan" in a.what or "ours" in a.what:
            t_plan = b.run_plan()
            print(f"maxseq: plan: largest seq_len {t_plan} ({b.res['plan']})", flush=True)
        if "ours" in a.what and t_plan > 0:
            b.run_ours(t_plan)
        if "peer" in a.what:
            b.run_peer()
    except (OutOfTime, KeyboardInterrupt):
        stopped = "out of time"
    except Exception as e:  # still the table and the JSON of what was measured
        stopped = f"error: {e!r}"
    b.res["stopped"] = stopped
    b.res["elapsed_s"] = round(time.monotonic() - clock.t0, 1)
    print(table(b.res), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(b.res) + "\n")
    if not a.keep:
        for name in os.listdir(work):
            os.remove(os.path.join(work, name))
        os.rmdir(work)
    return 1 if stopped.startswith("error") else 0


if __name__ == "__main__":
    sys.exit(main())
