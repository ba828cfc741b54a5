"""Reports as one self-contained HTML page (figures embedded), Markdown and JSON.

A report is a list of sections holding text, tables and matplotlib figures. The ablation
and any later analysis build a :class:`Report` and call :func:`write_report`; none of them
writes HTML by hand.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # figures are made by their modules; importing matplotlib here cost train ~0.8 s
    from matplotlib.figure import Figure


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class FigureBlock:
    name: str  # file stem, e.g. "distance_curves"
    figure: Figure
    caption: str = ""


@dataclass
class Section:
    title: str
    blocks: list[str | Table | FigureBlock] = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        self.sections.append(Section(title))
        return self.sections[-1]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td{white-space:nowrap}td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left;white-space:normal;min-width:7em}td.num{white-space:normal}
figure{margin:1em 0}.wide{overflow-x:auto;max-width:100%}p.caption{color:#555;font-size:.9em;margin:.3em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption,caption{color:#555;font-size:.9em;margin:.3em 0}
p{line-height:1.45}
"""

# A cell that reads as a number: a sign or digit first ("0.815 [0.793, 0.832]", "+0.001 ... p=0.4",
# "7.95 M"), or the dash that stands for a missing one.
NUMBER = re.compile(r"^[-+\u2212]?\.?\d|^[\u2013-]$")
# Where a number cell may wrap: before its CI, its p-value or a parenthesis, never inside them.
NUMBER_BREAK = re.compile(r" (?=[\[(]|p=)")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and NUMBER.match(value) is not None)


def numeric_columns(table: Table) -> list[bool]:
    """Per column: do all its cells read as numbers? Numbers are right-aligned so their digits
    line up; text (names, claims, evidence) is left-aligned and wraps, as prose reads."""
    return [
        bool(table.rows) and all(_is_number(row[i]) for row in table.rows if i < len(row))
        for i in range(len(table.columns))
    ]


def _number_html(text: str) -> str:
    """A number cell that may wrap only before its CI or p-value: on a laptop's width the
    columns narrow to "mean / [low, high]" instead of pushing the table off the page."""
    parts = NUMBER_BREAK.split(text)
    return " ".join(html.escape(part).replace(" ", "&nbsp;") for part in parts)


def _table_html(table: Table) -> str:
    numeric = numeric_columns(table)
    kinds = ["num" if flag else "text" for flag in numeric]
    head = "".join(f"<th class='{kind}'>{html.escape(c)}</th>" for c, kind in zip(table.columns, kinds))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{kind}'>{_number_html(_cell(v)) if kind == 'num' else html.escape(_cell(v))}</td>"
            for v, kind in zip(row, kinds)
        )
        + "</tr>"
        for row in table.rows
    )
    cap = f"<p class='caption'>{html.escape(table.caption)}</p>" if table.caption else ""
    # A table wider than the page even so scrolls inside its own box instead of widening the page.
    return f"{cap}<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def render_html(report: Report, images: dict[str, bytes]) -> str:
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"
    ]
    if report.intro:
        parts += [f"<p>{html.escape(p)}</p>" for p in report.intro.split("\n\n")]
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, str):
                parts.append(f"<p>{html.escape(block)}</p>")
            elif isinstance(block, Table):
                parts.append(_table_html(block))
            else:
                data = base64.b64encode(images[block.name]).decode()
                parts.append(
                    f"<figure><img alt='{html.escape(block.name)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


def md_text(text: str) -> str:
    """Text for Markdown with raw HTML defused: variant, image and run names come from files
    (``result.json``, folder names), and a Markdown viewer renders HTML found in them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(value: Any) -> str:
    return md_text(_cell(value)).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, figure_dir: str) -> str:
    lines = [f"# {md_text(report.title)}", ""]
    if report.intro:
        lines += [md_text(report.intro), ""]
    for section in report.sections:
        lines += [f"## {md_text(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, str):
                lines += [md_text(block), ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [md_text(block.caption), ""]
                lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
                lines.append("|" + "|".join("---" for _ in block.columns) + "|")
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"![{md_text(block.caption or block.name)}]({figure_dir}/{block.name}.png)", ""]
                if block.caption:
                    lines += [f"*{md_text(block.caption)}*", ""]
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return value


def write_report(report: Report, out_dir: Path, data: dict[str, Any], stem: str = "report") -> dict[str, Path]:
    """Write ``<stem>.html`` (self-contained), ``<stem>.md`` with ``figures/``, and ``<stem>.json``."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    images = {}
    for section in report.sections:
        for block in section.blocks:
            if isinstance(block, FigureBlock):
                images[block.name] = _png(block.figure)
                (fig_dir / f"{block.name}.png").write_bytes(images[block.name])
    paths = {"html": out_dir / f"{stem}.html", "md": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json"}
    paths["html"].write_text(render_html(report, images))
    paths["md"].write_text(render_markdown(report, "figures"))
    paths["json"].write_text(json.dumps(json_safe(data), indent=2))
    return paths
