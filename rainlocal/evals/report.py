"""Writing the eval report: ``report.md``, ``summary.json`` and the chart ``report.svg``.

The numbers come from ``summary`` (plain data), the text from ``markdown``, the chart from
``chart``; this module only puts them in the output directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rainlocal.evals.chart import write_chart
from rainlocal.evals.markdown import render_markdown
from rainlocal.evals.summary import summarize

__all__ = ["render_markdown", "summarize", "write_report"]

CHART = "report.svg"


def write_report(output: Path, summary: dict[str, Any], *, chart: bool = True) -> tuple[Path, Path | None]:
    """Write report.md, summary.json and (when there is something to plot) report.svg."""
    output.mkdir(parents=True, exist_ok=True)
    svg = output / CHART
    made = bool(chart and summary["systems"] and write_chart(summary, svg))
    summary = dict(summary, chart=svg.name if made else None)
    md = output / "report.md"
    md.write_text(render_markdown(summary), encoding="utf-8")
    (output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return md, svg if made else None
