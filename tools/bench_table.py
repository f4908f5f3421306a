"""Markdown tables from a `fastnn bench --json` file, for README.md and docs/, so the
figures there are the run's own and not typed by hand.

    python tools/bench_table.py results.json                  # print every table
    python tools/bench_table.py results.json --readme README.md
        # rewrite README.md's short table, between its "results:start/end" markers
"""
import json
import sys


def fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}"


START, END = "<!-- results:start -->", "<!-- results:end -->"


def results_table(data, threads=None, optimizers=None):
    """One row per network, batch and optimizer (those named, default all) at `threads`
    (default: the most)."""
    threads = threads or max(r["threads"] for r in data["rows"])
    rows = [r for r in data["rows"] if r["threads"] == threads
            and (optimizers is None or r["optimizer"] in optimizers)]
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


def source_line(data, path):
    return (f"From `{path}`: BLAS {data['blas']}; data: {data['data']}; "
            f"{data.get('machine', '')}; each figure the fastest warm epoch of "
            f"{data['repeats']} interleaved repeats.")


def update_readme(readme, data, path):
    """Replace the text between README's markers with the short table (SGD with momentum,
    the most threads) and the line saying where it came from."""
    with open(readme) as f:
        text = f.read()
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"{readme} needs one {START} and one {END} line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    table = results_table(data, optimizers=("momentum",))
    with open(readme, "w") as f:
        f.write(f"{head}{START}\n{source_line(data, path)}\n\n{table}\n{END}{tail}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 3) or len(argv) == 3 and argv[1] != "--readme":
        print(__doc__)
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    if len(argv) == 3:
        update_readme(argv[2], data, argv[0])
        return 0
    print(f"BLAS: {data['blas']}; data: {data['data']}; {data.get('machine', '')}; each "
          f"figure the fastest warm epoch of {data['repeats']} interleaved repeats\n")
    print(results_table(data))
    if data.get("scaling"):
        print("\nScaling (speed-up over the fewest threads):\n")
        print(scaling_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
