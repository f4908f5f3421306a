"""Markdown tables from a `fastnn bench --json` file, for README.md and docs/, so the
figures there are the run's own and not typed by hand.

    python tools/bench_table.py results.json
"""
import json
import sys


def fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}"


def results_table(data, threads=None):
    """One row per network, batch and optimizer at `threads` (default: the most)."""
    threads = threads or max(r["threads"] for r in data["rows"])
    rows = [r for r in data["rows"] if r["threads"] == threads]
    lines = ["| network | batch | optimizer | plan | fastnn s | floor s | fastnn / floor | "
             "torch s | torch / fastnn |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        torch = r.get("torch_s")
        lines.append(f"| {r['network']} | {r['batch_size']} | {r['optimizer']} | "
                     f"{r['plan_threads']} | {fmt(r['fastnn_s'])} | {fmt(r['floor_s'])} | "
                     f"{fmt(r['ratio'], 2)} | {fmt(torch)} | "
                     f"{fmt(torch / r['fastnn_s'] if torch else None, 2)} |")
    return f"{threads} threads:\n\n" + "\n".join(lines)


def scaling_table(data):
    """Per network, batch and optimizer: the epoch, speed-up and ratio at each count."""
    counts = sorted({s["threads"] for s in data["scaling"]})
    head = " | ".join(f"{t} thr: s / speed-up / floor / torch s" for t in counts)
    lines = [f"| network | batch | optimizer | {head} |",
             "|---|---:|---|" + "---:|" * len(counts)]
    keys = []
    for s in data["scaling"]:
        key = (s["network"], s["batch_size"], s["optimizer"])
        if key not in keys:
            keys.append(key)
    for key in keys:
        cells = []
        for t in counts:
            s = next((s for s in data["scaling"] if (s["network"], s["batch_size"],
                                                     s["optimizer"]) == key
                      and s["threads"] == t), None)
            cells.append("" if s is None else
                         f"{s['fastnn_s']:.3f} / {s['speedup']:.2f}x / {s['ratio']:.2f} / "
                         f"{fmt(s['torch_s'])}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    print(f"BLAS: {data['blas']}; data: {data['data']}; {data.get('machine', '')}; each "
          f"figure the fastest warm epoch of {data['repeats']} interleaved repeats\n")
    print(results_table(data))
    if data.get("scaling"):
        print("\nScaling (speed-up over the fewest threads):\n")
        print(scaling_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
