#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The soak's verdict and report (bench/soak/run.sh): reads its CSV (t,proc,rss_kb,fds,flows,
requests,errors; one row per process every 10 s), judges each process against the bounds below
over the samples after the warm-up, prints the summary and a table of one sample a minute, and
writes both as markdown to --out (unless "-"). Exit 1 when a bound is missed."""
import argparse
import sys

SLOPE_KIB_MIN = 64      # RSS least-squares slope after the warm-up
RSS_GROWTH_MIB = 8      # last quarter's highest RSS over the warm-up's highest
FD_GROWTH = 64          # last quarter's highest fd count over the warm-up's highest
ERROR_RATE = 0.001      # failed requests of all


def slope(pts):
    n = len(pts)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True)
    p.add_argument("--warmup", type=int, required=True, help="seconds")
    p.add_argument("--end", type=int, required=True, help="seconds of load")
    p.add_argument("--drained", default="yes")
    p.add_argument("--cmdline", default="")
    p.add_argument("--rate", default="")
    p.add_argument("--minutes", default="")
    p.add_argument("--machine", default="")
    p.add_argument("--out", default="-")
    a = p.parse_args()

    rows = []
    for line in open(a.csv).read().splitlines()[1:]:
        t, proc, rss, fds, flows, req, err = line.split(",")
        rows.append((int(t), proc, int(rss), int(fds), int(flows), int(req), int(err)))
    procs = []
    for r in rows:
        if r[1] not in procs:
            procs.append(r[1])
    quarter = a.end - (a.end - a.warmup) // 4
    out = []
    misses = []
    out.append("| process | RSS warm-up max | RSS end of load | RSS last-quarter max | RSS slope after warm-up | "
               "RSS slope, second half | fds warm-up max | fds last-quarter max | flows at end of load | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for proc in procs:
        s = [r for r in rows if r[1] == proc]
        warm = [r for r in s if r[0] <= a.warmup] or s[:1]
        after = [r for r in s if a.warmup <= r[0] <= a.end]
        last = [r for r in s if quarter <= r[0] <= a.end] or s[-1:]
        load = [r for r in s if r[0] <= a.end]
        wmax = max(r[2] for r in warm)
        lmax = max(r[2] for r in last)
        sl = slope([(r[0] / 60.0, r[2]) for r in after])
        # Not judged: whether growth is slowing (allocator pools filling) or steady (a leak).
        sl2 = slope([(r[0] / 60.0, r[2]) for r in s if a.end // 2 <= r[0] <= a.end])
        fw = max(r[3] for r in warm)
        fl = max(r[3] for r in last)
        why = []
        if sl > SLOPE_KIB_MIN:
            why.append("RSS slope %.1f KiB/min > %d" % (sl, SLOPE_KIB_MIN))
        if lmax > wmax + RSS_GROWTH_MIB * 1024:
            why.append("RSS %d KiB > warm-up max %d KiB + %d MiB" % (lmax, wmax, RSS_GROWTH_MIB))
        if fl > fw + FD_GROWTH:
            why.append("fds %d > warm-up max %d + %d" % (fl, fw, FD_GROWTH))
        misses += ["%s: %s" % (proc, w) for w in why]
        out.append("| %s | %.1f MiB | %.1f MiB | %.1f MiB | %+.1f KiB/min | %+.1f KiB/min | %d | %d | %d | %s |" % (
            proc, wmax / 1024, load[-1][2] / 1024, lmax / 1024, sl, sl2, fw, fl, load[-1][4],
            "PASS" if not why else "MISS"))
    req, err = rows[-1][5], rows[-1][6]
    if req == 0:
        misses.append("no requests were counted")
    elif err > req * ERROR_RATE:
        misses.append("errors %d of %d requests > %.1f%%" % (err, req, ERROR_RATE * 100))
    if a.drained != "yes":
        misses.append("open flows did not drop to 0 within 30 s of the load's end")
    summary = ["requests %d, errors %d (%.4f%%); open flows back to 0 after the load: %s" % (
        req, err, 100.0 * err / req if req else 0, a.drained)]
    summary.append("verdict: " + ("PASS" if not misses else "MISS: " + "; ".join(misses)))

    # One sample a minute: the first one of each minute, and the last ones (after the load).
    table = ["| min | " + " | ".join("%s RSS MiB" % x for x in procs) + " | " +
             " | ".join("%s fds" % x for x in procs) + " | " +
             " | ".join("%s flows" % x for x in procs) + " | requests | errors |",
             "|---" * (2 + 3 * len(procs)) + "|"]
    by_t = {}
    for r in rows:
        by_t.setdefault(r[0], {})[r[1]] = r
    seen = set()
    for t in sorted(by_t):
        m = t // 60
        if (m in seen and t <= a.end) or len(by_t[t]) != len(procs):
            continue
        seen.add(m)
        s = by_t[t]
        label = ("%d" % m) if t <= a.end else ("%d s (after)" % t)
        table.append("| %s | " % label + " | ".join("%.1f" % (s[x][2] / 1024) for x in procs) + " | " +
                     " | ".join("%d" % s[x][3] for x in procs) + " | " +
                     " | ".join("%d" % s[x][4] for x in procs) + " | %d | %d |" % (s[procs[0]][5], s[procs[0]][6]))

    text = "\n".join(out + [""] + summary)
    print(text)
    print()
    print("\n".join(table))
    if a.out != "-":
        with open(a.out, "w") as f:
            f.write("# Soak results (bench/soak/run.sh)\n\n")
            f.write("`%s`: %s req/s for %s minutes on %s; warm-up %d s; a registry reload and a "
                    "certificate rotation every minute. Bounds after the warm-up: RSS slope <= %d KiB/min "
                    "and last-quarter max <= warm-up max + %d MiB; fds last-quarter max <= warm-up max + %d; "
                    "open flows 0 within 30 s of the end; errors <= %.1f%%.\n\n" % (
                        a.cmdline, a.rate, a.minutes, a.machine, a.warmup, SLOPE_KIB_MIN,
                        RSS_GROWTH_MIB, FD_GROWTH, ERROR_RATE * 100))
            f.write(text + "\n\n## One sample a minute\n\n" + "\n".join(table) + "\n")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
