#!/usr/bin/python3
"""Draw the soak's samples (scripts/soak.sh; CSV written by tests/tests/it/soak.rs) as a PNG.

Usage: soak-plot.py SOAK.csv OUT.png

Two panels over time: the gateway's RSS in MiB, and its open descriptors, tokio tasks alive
and OS threads. The warm-up is shaded; the idle samples (no client connected, before and
after the run) are drawn as hollow markers. The title gives the duration, the operations
and logins by method, and the failures. Needs Debian's python3-matplotlib (scripts/setup.sh).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def load(path):
    """The rows of the CSV, numbers converted (phase stays a string)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no samples")
    for r in rows:
        for k, v in r.items():
            if k != "phase":
                r[k] = float(v)
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    rows = load(sys.argv[1])
    active = [r for r in rows if r["phase"] != "idle"]
    idle = [r for r in rows if r["phase"] == "idle"]
    last = rows[-1]
    warm = [r["t_s"] for r in rows if r["phase"] == "warmup"]
    duration = max(r["t_s"] for r in active) if active else last["t_s"]
    methods = ["certificate", "kerberos", "ssh", "unix"]
    logins = ", ".join(f"{m} {int(last['rounds_' + m])}" for m in methods)
    rounds = sum(int(last["rounds_" + m]) for m in methods)

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    fig.suptitle(
        f"virtgated soak: {duration:.0f} s, {int(last['operations'])} operations "
        f"in {rounds} rounds, {int(last['failures'])} failed\n"
        f"rounds by login: {logins}; serial lines typed again: {int(last['serial_retyped'])}",
        fontsize=11,
    )

    def series(ax, key, label, color, scale=1.0):
        ax.plot(
            [r["t_s"] for r in active],
            [r[key] / scale for r in active],
            marker="o",
            markersize=3,
            color=color,
            label=label,
        )
        ax.plot(
            [r["t_s"] for r in idle],
            [r[key] / scale for r in idle],
            linestyle="none",
            marker="o",
            markerfacecolor="none",
            color=color,
        )

    series(top, "rss_kib", "RSS", "tab:blue", 1024.0)
    after_warmup = [r for r in active if r["phase"] == "run"]
    if after_warmup:
        base = after_warmup[0]["rss_kib"] / 1024.0
        top.axhspan(base * 0.9, base * 1.1, color="tab:blue", alpha=0.08,
                    label="±10 % of the first sample after the warm-up")
    top.set_ylabel("RSS (MiB)")
    top.set_ylim(bottom=0)
    series(bottom, "fds", "open descriptors", "tab:orange")
    series(bottom, "tasks", "tokio tasks alive", "tab:green")
    series(bottom, "threads", "OS threads", "tab:gray")
    bottom.set_ylabel("count")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("seconds since the clients started (hollow: idle, no client connected)")
    for ax in (top, bottom):
        if warm:
            after = [r["t_s"] for r in active if r["phase"] == "run"]
            ax.axvspan(0, after[0] if after else max(warm), color="0.9", label="warm-up")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
