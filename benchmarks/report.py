"""The benchmark report: Markdown tables, a PNG chart and the raw rows as JSON."""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._harness import Row

__all__ = [
    "NOT_AVAILABLE",
    "ModuleResult",
    "fmt",
    "render_chart",
    "render_markdown",
    "write_report",
]

NOT_AVAILABLE = "not yet available"
_COLORS = {True: "#55a868", False: "#c44e52", None: "#4c72b0"}


@dataclass
class ModuleResult:
    """One benchmark module's outcome: ``status`` is ``ok``, ``error`` or not yet available."""

    name: str
    title: str
    status: str
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    error: str = ""
    claims: tuple[str, ...] = ()


def fmt(value: float | None, unit: str = "") -> str:
    """A value for a table cell: None is a dash, ratios get an ``x``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "x":
        return f"{value:.2f}x"
    size = abs(value)
    if float(value).is_integer() or size >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}" if size >= 10 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _result(r: Row) -> str:
    if r["target"] is None:
        return ""
    return {True: "pass", False: "**FAIL**", None: "not measured"}[r["pass"]]


def _targets(results: Sequence[ModuleResult]) -> list[str]:
    lines = ["| check | measured | target | result | note |", "|---|---|---|---|---|"]
    for res in results:
        for r in res.rows:
            if r["target"] is not None:
                measured = fmt(r["value"], r["unit"])
                note = r.get("note", "")
                lines.append(
                    f"| {r['name']} | {measured} | {r['target']} | {_result(r)} | {note} |"
                )
        if res.status != "ok":
            for claim in res.claims:
                lines.append(f"| {claim} | — | see claim | {res.status} | `{res.name}` |")
    return lines


def _pivot(group: str, rows: list[Row]) -> list[str]:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    units = {r["metric"]: r["unit"] for r in rows if r["value"] is not None}
    cells = {(r["variant"], r["metric"]): r for r in rows}
    header = [f"{m} ({units[m]})" if units.get(m) else m for m in metrics]
    lines = [f"### {group}", "", "| variant | " + " | ".join(header) + " |"]
    lines.append("|---" * (len(metrics) + 1) + "|")
    for v in variants:
        values = []
        for m in metrics:
            cell = cells.get((v, m))
            if cell is None:
                values.append("")
            elif cell["value"] is None:
                values.append(cell.get("note", "—"))
            else:
                values.append(
                    fmt(cell["value"], "x" if cell["unit"] == "x" else "")
                )  # unit in header
        lines.append(f"| {v} | " + " | ".join(values) + " |")
    return [*lines, ""]


def _section(res: ModuleResult) -> list[str]:
    lines = [f"## {res.title} (`benchmarks/{res.name}.py`)", ""]
    if res.status == NOT_AVAILABLE:
        claims = "; ".join(res.claims)
        return [*lines, f"Not yet available{': will measure ' + claims if claims else ''}.", ""]
    if res.status == "error":
        return [*lines, f"**Error** after {res.seconds:.1f} s:", "", "```", res.error, "```", ""]
    lines += [f"{len(res.rows)} rows in {res.seconds:.1f} s.", ""]
    groups: dict[str, list[Row]] = {}
    flat: list[Row] = []
    for r in res.rows:
        if r.get("group") and r.get("variant") and r.get("metric"):
            groups.setdefault(r["group"], []).append(r)
        else:
            flat.append(r)
    for group, rows in groups.items():
        lines += _pivot(group, rows)
    if flat:
        lines += ["| measurement | value | target | result | note |", "|---|---|---|---|---|"]
        for r in flat:
            target = r["target"] or ""
            value = fmt(r["value"], r["unit"])
            lines.append(
                f"| {r['name']} | {value} | {target} | {_result(r)} | {r.get('note', '')} |"
            )
        lines.append("")
    return lines


def render_markdown(results: Sequence[ModuleResult], info: dict[str, str], chart: str) -> str:
    """The whole report as Markdown; ``chart`` is the PNG's path relative to the report."""
    lines = ["# meshlib benchmarks", "", "| run | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "## Targets", "", *_targets(results), "", f"![benchmark chart]({chart})", ""]
    for res in results:
        lines += _section(res)
    return "\n".join(lines).rstrip() + "\n"


_Bar = tuple[str, float, bool | None, float | None]  # label, value, pass, threshold
_THRESHOLD = re.compile(r"^\s*[<>]=?\s*([0-9.]+)")


def _threshold(target: str | None) -> float | None:
    """The number in a target such as ``>= 0.95x``, if there is one."""
    found = _THRESHOLD.match(target or "")
    return float(found.group(1)) if found else None


def _panels(results: Sequence[ModuleResult]) -> list[tuple[str, list[_Bar], str]]:
    """(title, bars, unit) per chart panel."""
    ratios = [
        (r["name"], float(r["value"]), r["pass"], _threshold(r["target"]))
        for res in results
        for r in res.rows
        if r["unit"] == "x" and r["target"] is not None and r["value"] is not None
    ]
    panels = [("Ratios with a target", ratios, "x")] if ratios else []
    charted: dict[tuple[str, str], list[_Bar]] = {}
    units: dict[tuple[str, str], str] = {}
    for res in results:
        for r in res.rows:
            if r.get("chart") and r["value"] is not None:
                key = (r["group"], r["metric"])
                charted.setdefault(key, []).append((r["variant"], float(r["value"]), None, None))
                units[key] = r["unit"]
    panels += [(f"{g}: {m}", bars, units[(g, m)]) for (g, m), bars in charted.items()]
    return panels


def render_chart(results: Sequence[ModuleResult], path: Path) -> None:
    """_Bar charts: every ratio that has a target (green pass, red fail, black tick at the
    target), then one panel per group and metric of the rows marked ``chart``."""
    panels = _panels(results)
    if not panels:
        fig = Figure(figsize=(8, 2))
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center")
        ax.set_axis_off()
    else:
        heights = [0.5 + 0.32 * len(bars) for _, bars, _ in panels]
        fig = Figure(figsize=(12, sum(heights) + 0.6 * len(panels)))
        axes = fig.subplots(
            len(panels),
            1,
            squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, (title, bars, unit) in zip(axes[:, 0], panels, strict=True):
            labels = [textwrap.fill(bar[0], 60) for bar in bars]
            values = [bar[1] for bar in bars]
            colors = [_COLORS[bar[2]] for bar in bars]
            ax.barh(range(len(bars)), values, color=colors)
            ax.set_yticks(range(len(bars)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(title, fontsize=9, loc="left")
            ax.set_xlabel(unit, fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
            if unit == "x":
                ax.axvline(1.0, color="grey", linewidth=0.8)
            for i, value in enumerate(values):
                ax.text(value, i, " " + fmt(value, unit), va="center", fontsize=7)
            marks = [(i, bar[3]) for i, bar in enumerate(bars) if bar[3] is not None]
            for i, t in marks:
                ax.plot([t, t], [i - 0.45, i + 0.45], color="black", linewidth=1.5)
            ax.set_xlim(0, max([*values, *(t for _, t in marks)]) * 1.18 or 1)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(
    results: Sequence[ModuleResult], info: dict[str, str], out: Path
) -> tuple[Path, Path, Path]:
    """Write ``report.md``, ``report.png`` and ``report.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, png, raw = out / "report.md", out / "report.png", out / "report.json"
    render_chart(results, png)
    md.write_text(render_markdown(results, info, png.name))
    raw.write_text(json.dumps({"info": info, "modules": [asdict(r) for r in results]}, indent=1))
    return md, png, raw
