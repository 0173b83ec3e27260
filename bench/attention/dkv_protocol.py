#!/usr/bin/env python3
"""A model of the fused d 128 backward's barrier protocol (k_attn_dkv_sm90), for DQ_BULK and
DQ_ALT (each tile's dQ formed by one warpgroup, the two in turn), run under random
interleavings. Agents: the producer (Q/dO stages), the dQ writer, consumer warpgroups 0 and 1
(each one agent: its warps move together between barriers). Checked: no deadlock; a stage's
Q/dO is not reloaded while a warpgroup still reads it; dS^T of a stage is not rewritten
while a dQ product reads it, and holds both warpgroups' rows of the right tile when read;
the staged dQ buffer is not rewritten before the writer read it, and the writer reads the
right tile. Semantics modelled: mbarrier phases waited by parity (a wait passes when the
current phase's parity differs), named barriers as counters that complete a generation at
the full count (bar.arrive does not wait; bar.sync waits for the generation it joined).
  python3 bench/attention/dkv_protocol.py [trials] [--plant N]
--plant 1: DQ_ALT with one named barrier for every tile (instead of two in turn);
--plant 2: DQ_ALT with the epilogue on barrier 1 (instead of 3);
--plant 3: DQ_ALT's owner without the wait for the writer's read of the last tile.
Each planted bug should be found."""
import random
import sys

from ov_protocol import MBar  # the forward's model's mbarrier: arrive(), ok(parity)


class NBar:
    """a named barrier over 2 warpgroups"""

    def __init__(self):
        self.arrived, self.gen = 0, 0

    def join(self):
        g = self.gen
        self.arrived += 1
        if self.arrived == 2:
            self.arrived, self.gen = 0, self.gen + 1
        return g


class Bug(Exception):
    pass


def run(nit, alt, rng, plant=0):
    full = [MBar(1), MBar(1)]
    empty = [MBar(2), MBar(2)]  # the warpgroups' releases (8 warps in the kernel)
    staged, read = MBar(1 if alt else 2), MBar(1)
    nb = {1: NBar(), 2: NBar(), 3: NBar()}
    qstage = [None, None]  # the tile loaded in each Q/dO stage
    qreaders = [set(), set()]
    ds = [dict(), dict()]  # stage -> {wg: tile} rows of dS^T written
    dsread = [0, 0]  # dQ products reading the stage now
    sqa = {"tile": None, "parts": set(), "read": True}

    def producer():
        for it in range(nit):
            st = it & 1
            if it >= 2:
                while not empty[st].ok(((it >> 1) - 1) & 1):
                    yield
            if qreaders[st]:
                raise Bug(f"Q stage {st} reloaded for tile {it} while read by {qreaders[st]}")
            qstage[st] = it
            yield
            full[st].arrive()
            yield

    def writer():
        for it in range(nit):
            while not staged.ok(it & 1):
                yield
            if sqa["tile"] != it or len(sqa["parts"]) != 2:
                raise Bug(f"writer read tile {sqa['tile']} parts {sqa['parts']} for tile {it}")
            yield
            sqa["read"] = True
            read.arrive()
            yield

    def dq_product(st, it):
        rows = ds[st]
        if rows.get(0) != it or rows.get(1) != it:
            raise Bug(f"dQ of tile {it} reads stage {st} holding {rows}")
        dsread[st] += 1
        yield
        if rows.get(0) != it or rows.get(1) != it:
            raise Bug(f"stage {st} rewritten during tile {it}'s dQ: {rows}")
        dsread[st] -= 1

    def stage_dq(it, parts):
        if not sqa["read"] and sqa["tile"] != it:
            raise Bug(f"dQ staging of tile {it} over tile {sqa['tile']} not yet read")
        if sqa["tile"] != it:
            sqa.update(tile=it, parts=set(), read=False)
        sqa["parts"] |= parts

    def sync(bid):
        g = nb[bid].join()
        while nb[bid].gen == g:
            yield

    def consumer(cw):
        for it in range(nit):
            st = it & 1
            while not full[st].ok((it >> 1) & 1):
                yield
            if qstage[st] != it:
                raise Bug(f"wg {cw} tile {it}: stage {st} holds tile {qstage[st]}")
            qreaders[st].add(cw)
            yield  # S^T, dP^T, P^T, dV, dS^T
            if dsread[st]:
                raise Bug(f"wg {cw} writes dS^T of tile {it} into stage {st} while a dQ reads it")
            ds[st][cw] = it
            yield
            if not alt:
                yield from sync(1)
                yield from dq_product(st, it)
                qreaders[st].discard(cw)
                empty[st].arrive()
                if it > 0:
                    while not read.ok((it - 1) & 1):
                        yield
                stage_dq(it, {cw})
                staged.arrive()
                yield
                continue
            bid = 1 if plant == 1 else 1 + (it & 1)
            if (it & 1) == cw:  # the owner
                yield from sync(bid)
                yield from dq_product(st, it)
                qreaders[st].discard(cw)
                empty[st].arrive()
                if it > 0 and plant != 3:
                    while not read.ok((it - 1) & 1):
                        yield
                stage_dq(it, {0, 1})
                yield
                staged.arrive()
            else:
                nb[bid].join()  # bar.arrive
                yield
                qreaders[st].discard(cw)
                empty[st].arrive()
            yield
        yield from sync(1 if (plant == 2 or not alt) else 3)  # the epilogue (K, V rewritten)
        done[cw] = True

    done = [False, False]
    agents = [producer(), writer(), consumer(0), consumer(1)]
    live = list(range(4))
    steps = 0
    while live:
        i = rng.choice(live)
        try:
            next(agents[i])
        except StopIteration:
            live.remove(i)
        steps += 1
        if steps > 200000:
            raise Bug(f"deadlock (no progress), done {done}")
    if nb[1].arrived or nb[2].arrived or nb[3].arrived:
        raise Bug("a named barrier left with arrivals")
    return steps


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else 2000
    plant = int(sys.argv[sys.argv.index("--plant") + 1]) if "--plant" in sys.argv else 0
    rng = random.Random(1)
    for alt in (False, True) if not plant else (True,):
        bad = 0
        for t in range(trials):
            try:
                run(rng.randint(1, 9), alt, rng, plant)
            except Bug as e:
                bad += 1
                if bad == 1:
                    print(f"{'DQ_ALT' if alt else 'DQ_BULK'}: trial {t}: {e}")
        print(f"{'DQ_ALT' if alt else 'DQ_BULK'}{' plant ' + str(plant) if plant else ''}: {trials} trials, {bad} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
