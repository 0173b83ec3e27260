#!/usr/bin/env python3
# A model of the synchronization protocol of the persistent forward (k_attn_fwd_ov_sm90 with
# PERSIST, UL_ATTN_FWD=ovpp-dyn; cuda_attention_sm90.cu), written by hand from the kernel: the
# producer thread (the task counter shared by the CTAs, the task posted in shared memory, two
# Q buffers, the K/V stage ring numbered across tasks), NW consumer warpgroups (one warp's
# arrival counted 4 times), mbarriers with parity waits (a wait on parity p passes while the
# barrier's current phase has the other parity), the named barriers of the ping-pong and the
# asynchronous TMA copies. Each run picks a random interleaving (random task lengths, 1-4
# CTAs); it fails on a deadlock, on a copy landing in a buffer that a consumer still reads,
# on a task slot rewritten before every warpgroup read it, on a consumer seeing the wrong
# tile, or unless every task ran once. Keep it in step with the kernel when either changes.
#   python3 bench/attention/dyn_protocol.py [RUNS per NW, default 3000]
import random, sys

class MBar:
    def __init__(s, count): s.count, s.pend, s.tx, s.c = count, 0, 0, 0
    def _maybe(s):
        if s.pend == s.count and s.tx == 0: s.c += 1; s.pend = 0
    def arrive(s, n=1): s.pend += n; assert s.pend <= s.count, "too many arrivals"; s._maybe()
    def expect_tx(s, b): s.tx += b; s.arrive()
    def complete_tx(s, b): s.tx -= b; assert s.tx >= 0; s._maybe()
    def done(s, p): return (s.c & 1) != p

class NBar:  # named barrier of 2 warpgroups' worth of threads
    def __init__(s): s.cnt, s.gen = 0, 0
    def add(s):
        s.cnt += 1
        if s.cnt == 2: s.cnt = 0; s.gen += 1

def run(seed, NW=2, nctas=3, ntask=17):
    rng = random.Random(seed)
    nkbs = [rng.randint(1, 5) for _ in range(ntask)]
    ctr = [0]
    async_ops = []  # (callable)
    done_tasks = []
    agents = []

    def cta(b):
        bar = {k: MBar(1) for k in ("q0", "q1", "k0", "k1", "v0", "v1", "t0", "t1")}
        for k in ("kr0", "kr1", "vr0", "vr1", "qr0", "qr1"): bar[k] = MBar(4 * NW)
        nb = [NBar() for _ in range(NW)]
        smem = {"q": [None, None], "k": [None, None], "v": [None, None], "slot": [None, None]}
        use = {"q": [0, 0], "k": [0, 0], "v": [0, 0]}  # consumer warpgroups using the buffer
        slot_reads = [NW, NW]

        def tma(kind, i, tag, b_):
            def land():
                assert use[kind][i] == 0, f"TMA overwrote {kind}{i} in use"
                smem[kind][i] = tag
                bar[b_].complete_tx(1)
            async_ops.append(land)

        def producer():
            cur, gk, it = b, 0, 0
            while cur < ntask:
                q = it & 1
                nxt = nctas + ctr[0]; ctr[0] += 1
                nkb = nkbs[cur]
                if it >= 2:
                    p = ((it >> 1) - 1) & 1
                    yield lambda: bar[f"qr{q}"].done(p)
                assert slot_reads[q] == NW, "slot overwritten before read"
                smem["slot"][q] = (cur, min(nxt, ntask)); slot_reads[q] = 0
                bar[f"t{q}"].arrive()
                bar[f"q{q}"].expect_tx(1); tma("q", q, cur, f"q{q}")
                for kb in range(nkb):
                    st = gk & 1; pe = ((gk >> 1) - 1) & 1
                    if gk >= 2: yield (lambda st=st, pe=pe: bar[f"kr{st}"].done(pe))
                    bar[f"k{st}"].expect_tx(1); tma("k", st, (cur, kb), f"k{st}")
                    if gk >= 2: yield (lambda st=st, pe=pe: bar[f"vr{st}"].done(pe))
                    bar[f"v{st}"].expect_tx(1); tma("v", st, (cur, kb), f"v{st}")
                    gk += 1
                cur = nxt; it += 1

        def consumer(cw):
            gb, it = 0, 0
            if b >= ntask: return  # the kernel's guard (grid beyond the tasks)
            yield None
            while True:
                q = it & 1; ph = (it >> 1) & 1
                yield lambda: bar[f"t{q}"].done(ph)
                task, nxt = smem["slot"][q]; slot_reads[q] += 1
                last = nxt >= ntask
                nkb = nkbs[task]
                if it == 0 and cw == NW - 1: nb[0].add()
                yield lambda: bar[f"q{q}"].done(ph)
                assert smem["q"][q] == task; use["q"][q] += 1

                def turn(last_turn):
                    g = nb[cw].gen; nb[cw].add()
                    yield lambda: nb[cw].gen > g
                    if not (last_turn and cw == NW - 1): nb[(cw + 1) % NW].add()
                # tile 0
                st = gb & 1
                yield (lambda st=st: bar[f"k{st}"].done((gb >> 1) & 1))
                assert smem["k"][st] == (task, 0), (smem["k"][st], task); use["k"][st] += 1
                yield from turn(False)
                use["k"][st] -= 1; bar[f"kr{st}"].arrive(4)
                for kb in range(1, nkb):
                    gk = gb + kb; st = gk & 1; pst = st ^ 1
                    yield (lambda st=st, gk=gk: bar[f"k{st}"].done((gk >> 1) & 1))
                    yield (lambda pst=pst, gk=gk: bar[f"v{pst}"].done(((gk - 1) >> 1) & 1))
                    assert smem["k"][st] == (task, kb) and smem["v"][pst] == (task, kb - 1)
                    use["k"][st] += 1; use["v"][pst] += 1
                    yield from turn(False)
                    use["k"][st] -= 1; bar[f"kr{st}"].arrive(4)
                    use["v"][pst] -= 1; bar[f"vr{pst}"].arrive(4)
                use["q"][q] -= 1; bar[f"qr{q}"].arrive(4)
                gk = gb + nkb - 1; st = gk & 1
                yield (lambda st=st, gk=gk: bar[f"v{st}"].done((gk >> 1) & 1))
                assert smem["v"][st] == (task, nkb - 1); use["v"][st] += 1
                yield from turn(last)
                use["v"][st] -= 1; bar[f"vr{st}"].arrive(4)
                if cw == 0: done_tasks.append(task)
                if last: return
                gb += nkb; it += 1

        return [producer()] + [consumer(cw) for cw in range(NW)]

    for b in range(nctas): agents += cta(b)
    waits = [None] * len(agents)
    alive = set(range(len(agents)))
    steps = 0
    while alive or async_ops:
        ready = [i for i in alive if waits[i] is None or waits[i]()]
        choices = [("a", i) for i in ready] + [("t", j) for j in range(len(async_ops))]
        if not choices: raise RuntimeError(f"deadlock (seed {seed})")
        kind, i = rng.choice(choices)
        if kind == "t": async_ops.pop(i)(); continue
        try: waits[i] = next(agents[i])
        except StopIteration: alive.discard(i)
        steps += 1
    assert sorted(done_tasks) == list(range(ntask)), sorted(done_tasks)
    return steps

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
for NW in (2, 3):
    for seed in range(runs):
        run(seed, NW=NW, nctas=1 + seed % 4, ntask=1 + seed % 23)
print(f"dyn_protocol: {2 * runs} interleavings, no deadlock or hazard, every task once")
