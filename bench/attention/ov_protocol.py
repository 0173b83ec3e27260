"""Model of the persistent Hopper forward's barrier protocol (k_attn_fwd_ov_sm90,
src/kernels/cuda/cuda_attention_sm90.cu; issue 21), written before its last two details
were measured: Q released after O is staged in it and stored by TMA (fwd_store_tma), and
the key tiles a warpgroup's rows do not see passed outside the loop (fwd_ov_skip). Run it
after changing the kernel's barriers. The producer thread and each consumer warp are agents, run in a
random interleaving; TMA loads complete asynchronously. Checked: no deadlock, every K, V and
Q tile read is the right one, no buffer rewritten while a warp relies on it, each turn
barrier instance made of the right warps and none left with arrivals at the end, every task
done once. Then three planted bugs, each of which it must find.
    python3 bench/attention/ov_protocol.py [RUNS, 300]   (3000 runs: 40 s)
"""
import random, sys

class MBar:
    def __init__(s, count): s.count, s.pending, s.done = count, count, 0
    def arrive(s):
        s.pending -= 1
        assert s.pending >= 0
        if s.pending == 0: s.done += 1; s.pending = s.count
    def ok(s, par): return (s.done & 1) != par

class Violation(Exception): pass

def run(seed, NW, tasks_spec, ntask_total, bugs=()):
    rnd = random.Random(seed)
    CW = 4 * NW
    bar = {}
    for st in range(2):
        bar[1+st] = MBar(1); bar[3+st] = MBar(1); bar[5+st] = MBar(CW); bar[7+st] = MBar(CW)
    bar[0] = MBar(1); bar[11] = MBar(1); bar[9] = MBar(CW); bar[10] = MBar(CW); bar[12] = MBar(1); bar[13] = MBar(1)
    slot = {0: None, 1: None}
    kst = {0: None, 1: None}; vst = {0: None, 1: None}; qst = {0: None, 1: None}
    use = {}  # (kind, buf) -> set of warps relying on it
    def mark(k, b, w): use.setdefault((k, b), set()).add(w)
    def unmark(k, b, w): use.get((k, b), set()).discard(w)
    def check_free(k, b):
        if use.get((k, b)): raise Violation(f"{k}{b} rewritten while used by {sorted(use[(k,b)])}")
    # named barriers: id -> list of (warp, kind)
    nb = {}; nb_gen = {}
    def nb_arrive(i, w, cnt, sync):
        l = nb.setdefault(i, [])
        l.append((w, sync))
        if len(l) * 32 == cnt:
            if i <= NW:  # turn barrier: 4 syncers of wg i-1 and 4 arrivers of wg (i-2)%NW
                syn = [x for x, s in l if s]; arr = [x for x, s in l if not s]
                if len(syn) != 4 or any(x // 4 != i - 1 for x in syn) or any(x // 4 != (i - 2) % NW for x in arr):
                    raise Violation(f"turn barrier {i} instance of {l}")
            nb[i] = []; nb_gen[i] = nb_gen.get(i, 0) + 1
        return nb_gen.get(i, 0)
    asyncq = []  # pending async completions: callables
    done_tasks = []
    tasks = tasks_spec  # list of dicts: nkb, lo[cw], hi[cw]

    def producer():
        gk = 0
        for it, t in enumerate(tasks):
            q = it & 1
            if it >= 2:
                par = ((it >> 1) - 1) & 1
                while not bar[9 + q].ok(par): yield
            nxt = it + 1 if it + 1 < len(tasks) else ntask_total
            slot[q] = (it, nxt)
            bar[12 + q].arrive()
            check_free('Q', q)
            def qload(q=q, it=it):
                check_free('Q', q); qst[q] = it; bar[0 if q == 0 else 11].arrive()
            asyncq.append(qload)
            for kb in range(t['nkb']):
                st = gk & 1; pe = ((gk >> 1) - 1) & 1
                if gk >= 2:
                    while not bar[5 + st].ok(pe): yield
                check_free('K', st)
                def kl(st=st, g=gk): check_free('K', st); kst[st] = g; bar[1 + st].arrive()
                asyncq.append(kl)
                if gk >= 2:
                    while not bar[7 + st].ok(pe): yield
                check_free('V', st)
                def vl(st=st, g=gk): check_free('V', st); vst[st] = g; bar[3 + st].arrive()
                asyncq.append(vl)
                gk += 1
                yield

    def consumer(w):
        cw = w // 4
        gb = 0
        it = 0
        def turn_begin():
            g0 = nb_gen.get(1 + cw, 0)
            nb_arrive(1 + cw, w, 256, True)
            while nb_gen.get(1 + cw, 0) == g0: yield
        def turn_end(last):
            if not (last and cw == NW - 1): nb_arrive(1 + (cw + 1) % NW, w, 256, False)
        def wait(b, par):
            while not bar[b].ok(par): yield
        def skip(gk, last):
            st = gk & 1; ph = (gk >> 1) & 1
            yield from turn_begin(); turn_end(last)
            yield from wait(1 + st, ph)
            if kst[st] != gk: raise Violation(f"w{w} skip: K stage {st} holds {kst[st]}, expected {gk}")
            bar[5 + st].arrive(); yield
            if 'skip-no-v-wait' not in bugs: yield from wait(3 + st, ph)
            if 'skip-no-v-wait' not in bugs and vst[st] != gk: raise Violation(f"w{w} skip: V stage {st} holds {vst[st]}, expected {gk}")
            bar[7 + st].arrive(); yield
        while True:
            q = it & 1
            yield from wait(12 + q, (it >> 1) & 1)
            tid, nxt = slot[q]
            if tid != it: raise Violation(f"w{w}: slot {q} holds task {tid}, expected {it}")
            t = tasks[tid]
            last = nxt >= ntask_total
            nkb, lo, hi = t['nkb'], t['lo'][cw], t['hi'][cw]
            first = it == 0
            if first and cw == NW - 1: nb_arrive(1, w, 256, False)
            for kb in range(lo): yield from skip(gb + kb, False)
            yield from wait(0 if q == 0 else 11, (it >> 1) & 1)
            if qst[q] != it: raise Violation(f"w{w}: Q{q} holds {qst[q]}, expected {it}")
            mark('Q', q, w)
            def usek(gk):
                st = gk & 1
                if kst[st] != gk: raise Violation(f"w{w}: K stage {st} holds {kst[st]}, expected {gk}")
                mark('K', st, w)
            def usev(gk):
                st = gk & 1
                if vst[st] != gk: raise Violation(f"w{w}: V stage {st} holds {vst[st]}, expected {gk}")
                mark('V', st, w)
            gk = gb + lo; st = gk & 1
            yield from wait(1 + st, (gk >> 1) & 1); usek(gk)
            yield from turn_begin(); turn_end(False); yield
            unmark('K', st, w); bar[5 + st].arrive(); yield
            for kb in range(lo + 1, hi):
                gk = gb + kb; st = gk & 1; pst = st ^ 1
                yield from wait(1 + st, (gk >> 1) & 1)
                yield from wait(3 + pst, ((gk - 1) >> 1) & 1)
                usek(gk); usev(gk - 1)
                yield from turn_begin(); turn_end(False); yield
                unmark('K', st, w); bar[5 + st].arrive(); yield
                unmark('V', pst, w); bar[7 + pst].arrive(); yield
            if 'q-early' in bugs: unmark('Q', q, w); bar[9 + q].arrive()
            gk = gb + hi - 1; st = gk & 1
            yield from wait(3 + st, (gk >> 1) & 1); usev(gk)
            yield from turn_begin(); turn_end(last and hi == nkb); yield
            unmark('V', st, w); bar[7 + st].arrive(); yield
            for kb in range(hi, nkb): yield from skip(gb + kb, last and kb == nkb - 1 and 'skip-no-last' not in bugs)
            # epilogue: O staged in Q buffer q (this warpgroup's rows), named barrier 4+cw, TMA store
            if qst[q] != it: raise Violation(f"w{w}: Q{q} rewritten before the epilogue")
            g0 = nb_gen.get(100 + cw, 0)
            nb_arrive(100 + cw, w, 128, True)
            while nb_gen.get(100 + cw, 0) == g0: yield
            if w % 4 == 0:
                yield  # the store reads the buffer (bulk_wait_read0)
                if qst[q] != it: raise Violation(f"w{w}: Q{q} rewritten during the store")
            if 'q-early' not in bugs: unmark('Q', q, w); bar[9 + q].arrive()
            done_tasks.append((it, w))
            if last: break
            gb += nkb
            it += 1

    agents = [producer()] + [consumer(w) for w in range(CW)]
    alive = list(range(len(agents)))
    stall = 0
    while alive or asyncq:
        choices = alive + (['a'] if asyncq else [])
        c = rnd.choice(choices)
        if c == 'a':
            f = asyncq.pop(rnd.randrange(min(2, len(asyncq))))  # loads complete nearly in order
            f(); stall = 0; continue
        try:
            before = snapshot(bar, nb, nb_gen, asyncq)
            next(agents[c])
            stall = stall + 1 if snapshot(bar, nb, nb_gen, asyncq) == before else 0
        except StopIteration:
            alive.remove(c); stall = 0
        if stall > 20000: raise Violation("deadlock")
    for i, l in nb.items():
        if l: raise Violation(f"named barrier {i} left with arrivals {l}")
    assert sorted(set(t for t, _ in done_tasks)) == list(range(len(tasks)))
    assert len(done_tasks) == len(tasks) * CW

def snapshot(bar, nb, nb_gen, asyncq):
    return (tuple((k, b.pending, b.done) for k, b in sorted(bar.items())), tuple((k, len(v)) for k, v in sorted(nb.items())),
            tuple(sorted(nb_gen.items())), len(asyncq))

def random_tasks(rnd, NW, n):
    ts = []
    for _ in range(n):
        nkb = rnd.randint(1, 6)
        lo, hi = [], []
        for cw in range(NW):
            l = rnd.randint(0, nkb - 1) if rnd.random() < 0.5 else 0
            h = rnd.randint(l + 1, nkb) if rnd.random() < 0.5 else nkb
            lo.append(l); hi.append(h)
        ts.append(dict(nkb=nkb, lo=lo, hi=hi))
    return ts

def sweep(N, bugs=()):
    for seed in range(N):
        rnd = random.Random(seed)
        NW = rnd.choice([2, 3])
        n = rnd.randint(1, 7)
        tasks = random_tasks(rnd, NW, n)
        try:
            run(seed, NW, tasks, n, bugs)
        except Violation as e:
            return f"seed {seed}, NW {NW}: {e}"
    return None

if __name__ == '__main__':
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    err = sweep(N)
    if err: print("FAIL:", err); sys.exit(1)
    print(f"{N} runs: no deadlock, no violation")
    # the model can fail: each of these bugs must be found
    for b in ('skip-no-v-wait', 'skip-no-last', 'q-early'):
        err = sweep(N, (b,))
        print(f"  with bug {b}: {'found: ' + err if err else 'NOT FOUND'}")
        if not err: sys.exit(1)
