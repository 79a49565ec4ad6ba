"""The chart: burst jobs/s and solo submit->callback p50 per system and job kind (PNG).

Bars are medians; the whiskers span min to max across repetitions. Without matplotlib (the test
extra alone) no chart is drawn and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

KINDS = ("noop", "io10", "http")
COLOURS = {"noop": "#4c72b0", "io10": "#dd8452", "http": "#55a868"}


def draw(rows: Sequence[dict[str, Any]], systems: Sequence[str], path: Path, title: str) -> str | None:
    """Writes the PNG; returns why not when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"

    panels = [
        ("burst", "jobs_per_s", "end-to-end jobs/s (burst; higher is better, log scale)", True),
        ("solo", "e2e_p50_ms", "submit→callback p50, ms (solo; lower is better, log scale)", True),
    ]
    shown = [s for s in systems if any(r["system"] == s for r in rows)]
    if not shown:
        return "no results to chart"
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(shown)), 9))
    width = 0.8 / len(KINDS)
    for ax, (shape, metric, label, log_scale) in zip(axes, panels, strict=True):
        drawn = False
        for k, kind in enumerate(KINDS):
            xs, medians, lows, highs = [], [], [], []
            for i, system in enumerate(shown):
                row = next(
                    (r for r in rows if (r["system"], r["kind"], r["shape"]) == (system, kind, shape)), None
                )
                value = None if row is None else row.get(metric)
                if value is None:
                    continue
                xs.append(i + (k - (len(KINDS) - 1) / 2) * width)
                medians.append(value["median"])
                lows.append(value["median"] - value["min"])
                highs.append(value["max"] - value["median"])
            if xs:
                drawn = True
                ax.bar(xs, medians, width, label=kind, color=COLOURS[kind], yerr=[lows, highs], capsize=3)
                for x, m in zip(xs, medians, strict=True):
                    ax.annotate(f"{m:,.0f}", (x, m), ha="center", va="bottom", fontsize=7, rotation=90,
                                xytext=(0, 3), textcoords="offset points")  # fmt: skip
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, rotation=30, ha="right")
        ax.set_title(label, fontsize=10)
        if not drawn:
            ax.text(0.5, 0.5, f"no {shape} runs", ha="center", va="center", transform=ax.transAxes)
            continue
        if log_scale:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
