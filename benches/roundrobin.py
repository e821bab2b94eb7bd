#!/usr/bin/env python3
"""Compare commands fairly on a noisy machine.

Runs every command once per round, in a rotated order, for ROUNDS rounds, so each round's
ratio to the baseline (the first command) is taken under nearly the same machine state.
Each command must print lines `NAME=NUMBER` (e.g. `st_ns_per_pair=17.3`); every such
figure is compared across commands. Prints, per figure and command, the median of the
per-round ratios to the baseline with a min..max band, and the baseline's own median.

usage: roundrobin.py [-n ROUNDS] -- 'BASELINE CMD' 'CMD 2' ['CMD 3' ...]
example: roundrobin.py -n 15 -- 'target/release/ga_system' \
                                  'target/release/ga_allocscope'
"""
import argparse, re, shlex, statistics, subprocess, sys

FIG = re.compile(r"^([A-Za-z_][\w.-]*)=([-+0-9.eE]+)\s*$")

def run(cmd):
    out = subprocess.run(shlex.split(cmd), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"command failed ({out.returncode}): {cmd}\n{out.stderr[-500:]}")
    return {m[1]: float(m[2]) for m in map(FIG.match, out.stdout.splitlines()) if m}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--rounds", type=int, default=11)
    ap.add_argument("cmds", nargs="+")
    a = ap.parse_args()
    if len(a.cmds) < 2:
        sys.exit("need a baseline and at least one other command")
    n = len(a.cmds)
    rounds = []
    for r in range(a.rounds):
        res = [None] * n
        for k in range(n):
            i = (k + r) % n
            res[i] = run(a.cmds[i])
        rounds.append(res)
    figs = sorted(set(rounds[0][0]))
    if not figs:
        sys.exit("the baseline printed no NAME=NUMBER lines")
    print(f"{a.rounds} rounds, order rotated each round; ratios are per-round X / baseline")
    for f in figs:
        base = [r[0][f] for r in rounds if f in r[0]]
        print(f"\n{f}: baseline median {statistics.median(base):.4g}  ({a.cmds[0]})")
        for i in range(1, n):
            rs = [r[i][f] / r[0][f] for r in rounds if f in r[i] and f in r[0] and r[0][f]]
            if rs:
                print(f"  {statistics.median(rs):6.3f}x  [{min(rs):.3f}..{max(rs):.3f}]  {a.cmds[i]}")

if __name__ == "__main__":
    main()
