"""The report's chart: harmlessness against cost, one point per strategy, as a small SVG file.

x: engine work relative to vanilla (tokens decoded, log scale: strategies differ by orders of
magnitude); y: the harmless rate on unsafe prompts. Bars: 95% intervals (Wilson for the rate, a
paired bootstrap for the ratio). Written as plain SVG text, so the report needs no plotting
library; any browser or Markdown viewer shows it.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from rainlocal.evals.strategies import label

W, H = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 40, 60
COLOURS = ("#555555", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    pts = []
    for row in summary.get("headline", []):
        h, w = row.get("harmless"), row.get("work_ratio")
        if not h or not h.get("n") or not w or not w.get("ratio"):
            continue
        lo_x, hi_x = (w.get("ci95") or [w["ratio"], w["ratio"]])
        pts.append({"system": row["system"], "x": w["ratio"], "x_lo": max(lo_x, 1e-3), "x_hi": max(hi_x, 1e-3),
                    "y": h["rate"], "y_lo": h["ci95"][0], "y_hi": h["ci95"][1]})
    return pts


def render_svg(summary: dict[str, Any]) -> str | None:
    """The chart as SVG text, or None when no strategy has both a harmless rate and a cost ratio."""
    pts = _points(summary)
    if not pts:
        return None
    xs = [p["x_lo"] for p in pts] + [p["x_hi"] for p in pts]
    lo = math.floor(math.log10(min(xs)))
    hi = max(math.ceil(math.log10(max(xs))), lo + 1)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo) * pw

    def sy(v: float) -> float:
        return TOP + (1 - v) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">'
           f'{escape(summary["suite"])}: harmlessness against cost ({escape(str(summary["meta"].get("model")))}, 95% intervals)</text>']
    for i in range(0, 11, 2):  # y grid
        y = sy(i / 10)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{i * 10}%</text>')
    for e in range(lo, hi + 1):  # x grid, decades
        x = sx(10 ** e)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{10 ** e:g}x</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 15}" text-anchor="middle">engine work relative to vanilla '
               '(tokens decoded, log scale)</text>')
    col = (summary.get("headline_columns") or {}).get("harmless") or {}
    y_label = "harmless on unsafe prompts (judge)"
    if col.get("replaced"):
        y_label = "harmless on unsafe prompts (string rule: the judge's kappa is below 0.6)"
    elif (col.get("fitness") or {}).get("fit") is False:
        y_label += ", unfit: kappa below 0.6"
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {TOP + ph / 2})">'
               f'{escape(y_label)}</text>')
    for i, p in enumerate(pts):
        c = COLOURS[i % len(COLOURS)]
        x, y = sx(p["x"]), sy(p["y"])
        out.append(f'<line x1="{x:.1f}" y1="{sy(p["y_lo"]):.1f}" x2="{x:.1f}" y2="{sy(p["y_hi"]):.1f}" stroke="{c}"/>')
        out.append(f'<line x1="{sx(p["x_lo"]):.1f}" y1="{y:.1f}" x2="{sx(p["x_hi"]):.1f}" y2="{y:.1f}" stroke="{c}"/>')
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{c}"><title>{escape(label(p["system"]))}: '
                   f'{100 * p["y"]:.1f}% harmless, {p["x"]:.3g}x work</title></circle>')
        out.append(f'<text x="{x + 8:.1f}" y="{y - 8:.1f}" fill="{c}">{escape(label(p["system"]))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_chart(summary: dict[str, Any], path: Path) -> bool:
    svg = render_svg(summary)
    if svg is None:
        return False
    path.write_text(svg, encoding="utf-8")
    return True
