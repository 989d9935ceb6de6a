"""A shareable report of one plan: verdict, breakdown table, advice and figures in one file.

`.html` is self-contained (figures embedded as base64 PNG data URIs); `.md` writes the PNGs
next to it and links them, for a ticket or a pull request. The report is assembled as a
list of blocks, then written by one of two small renderers.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from vramplan.components import label
from vramplan.plots.output import output_path, write_bytes
from vramplan.present import command_line, component_terms, describe_run, gib, term_arithmetic

REPORT_FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
SEQ_SWEEP_POINTS = 40


@dataclass(frozen=True)
class Block:
    kind: str  # "h2", "p", "code", "table", "list", "figure"
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    name: str = ""  # figure: file-name part
    png: bytes = b""


def _breakdown_blocks(breakdown) -> list[Block]:
    required = breakdown.required_bytes
    rows = tuple((label(name), gib(value), f"{value / required:.1%}")
                 for name, value in breakdown.components().items() if value)
    rows += (("**total needed**", gib(required), "100%"),)
    phases = tuple((phase.replace("_", " ") + (" (peak)" if phase == breakdown.peak_phase else ""), gib(total))
                   for phase, total in breakdown.phase_peaks.items())
    blocks = [
        Block("h2", "Breakdown at the peak"),
        Block("table", header=("component", "GiB", "share"), rows=rows),
        Block("p", "Allocated bytes per phase of a step (the largest is the predicted "
                   "`torch.cuda.max_memory_allocated`):"),
        Block("table", header=("phase", "GiB"), rows=phases),
    ]
    if breakdown.paged_optimizer_bytes:
        blocks.append(Block("p", f"Paged optimizer state in CUDA managed memory: {gib(breakdown.paged_optimizer_bytes)} GiB."))
    if breakdown.notes:
        blocks.append(Block("list", rows=tuple((note,) for note in breakdown.notes)))
    return blocks


def _term_blocks(gpu, run, breakdown) -> list[Block]:
    """Every component's named terms with the numbers the plan multiplied (as `vramplan explain` prints them)."""
    rows = tuple((row["label"], item["name"], item["formula"], term_arithmetic(item), f"{item['bytes']:,}")
                 for row in component_terms(gpu, run, breakdown) for item in row["terms"])
    return [Block("h2", "How each component is computed"),
            Block("table", header=("component", "term", "formula", "numbers", "bytes"), rows=rows)]


def _advice_blocks(advice, fits: bool) -> list[Block]:
    title = "Room to spare" if fits else "To make it fit"
    if not advice:
        text = "Nothing to add: the run uses the room it has." if fits else "No change found that makes it fit on this GPU."
        return [Block("h2", title), Block("p", text)]
    rows = tuple((item.change, "yes" if item.fits else "no", gib(item.breakdown.headroom_bytes), f"`{item.flags}`")
                 for item in advice)
    return [Block("h2", title), Block("table", header=("change", "fits", "headroom GiB", "flags"), rows=rows)]


def _figure_blocks(model, gpu, run, breakdown) -> list[Block]:
    from vramplan.plots import (breakdown_figure, figure_bytes, max_seq_curves, max_seq_figure,
                                seq_components, seq_components_figure)
    from vramplan.plots.seq_components import seq_grid

    seq_max = min(max(2 * run.seq_len, model.max_position_embeddings, 1024), 262_144)
    figures = [
        ("breakdown", "Where the memory goes", breakdown_figure(breakdown)),
        ("seq_components", "Memory by component against sequence length",
         seq_components_figure(seq_components(model, gpu, run, seq_grid(128, seq_max, SEQ_SWEEP_POINTS)))),
        ("max_seq", "Longest sequence per micro-batch", max_seq_figure(max_seq_curves(model, [gpu], run))),
    ]
    return [Block("figure", text=title, name=name, png=figure_bytes(figure, "png")) for name, title, figure in figures]


def report_blocks(model, gpu, run, command: str | None = None) -> tuple[str, list[Block]]:
    """Title and blocks of the report for one (model, GPU, run)."""
    from vramplan import __version__
    from vramplan.advice import advise
    from vramplan.estimate import plan

    breakdown = plan(model, gpu, run)
    verdict = breakdown.verdict
    title = f"vramplan: {breakdown.model} on {breakdown.gpu}: {verdict}"
    blocks = [
        Block("p", f"**{verdict}**: needs {gib(breakdown.required_bytes)} GiB of {gib(breakdown.capacity_bytes)} GiB, "
                   f"headroom {gib(breakdown.headroom_bytes)} GiB. Predicted peak "
                   f"(`torch.cuda.max_memory_allocated`): {gib(breakdown.peak_allocated_bytes)} GiB during the "
                   f"{breakdown.peak_phase.replace('_', ' ')} phase."),
        Block("p", f"Run: {describe_run(breakdown)}."),
        *[Block("p", f"**Cannot run here:** {breakdown.blocked_by}.")] * bool(breakdown.blocked_by),
        *[Block("p", f"Warning: {warning}.") for warning in breakdown.warnings],
        Block("code", command or command_line(model.name, gpu.key, run)),
        *_breakdown_blocks(breakdown),
        *_term_blocks(gpu, run, breakdown),
        *_advice_blocks(advise(model, gpu, run), breakdown.fits),
        Block("h2", "Figures"),
        *_figure_blocks(model, gpu, run, breakdown),
        Block("p", f"Generated by vramplan {__version__}."),
    ]
    return title, blocks


def _numeric_columns(block: Block) -> set[int]:
    """Columns whose cells are all numbers (right-aligned in both renderers)."""
    def numeric(cell: str) -> bool:
        return cell.strip("*%").replace(".", "", 1).lstrip("-").isdigit()

    return {i for i in range(len(block.header)) if all(numeric(row[i]) for row in block.rows)}


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(title: str, blocks: list[Block], image_names: dict[str, str]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if block.kind == "h2":
            lines += [f"## {block.text}", ""]
        elif block.kind == "p":
            lines += [block.text, ""]
        elif block.kind == "code":
            lines += ["```sh", block.text, "```", ""]
        elif block.kind == "list":
            lines += [f"- {row[0]}" for row in block.rows] + [""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(block.header) + " |")
            numeric = _numeric_columns(block)
            lines.append("|" + "|".join("---:" if i in numeric else "---" for i in range(len(block.header))) + "|")
            lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "figure":
            lines += [f"![{block.text}]({image_names[block.name]})", ""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then the two Markdown marks the blocks use: **bold** and `code`."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #999;padding:.2rem .6rem}
td.num{text-align:right}pre{background:#f3f3f3;padding:.6rem;overflow-x:auto}
img{max-width:100%;border:1px solid #ddd}figure{margin:1rem 0}"""


def render_html(title: str, blocks: list[Block]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind == "h2":
            body.append(f"<h2>{html.escape(block.text)}</h2>")
        elif block.kind == "p":
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif block.kind == "code":
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(row[0])}</li>" for row in block.rows) + "</ul>")
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            numeric = _numeric_columns(block)
            rows = "".join("<tr>" + "".join(f'<td class="num">{_inline_html(cell)}</td>' if i in numeric
                                            else f"<td>{_inline_html(cell)}</td>" for i, cell in enumerate(row))
                           + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block.kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block.text)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(path: str | Path, model, gpu, run, command: str | None = None, field: str = "--out") -> list[Path]:
    """Write the report to `path` (.md or .html); returns every file written."""
    target, fmt = output_path(str(path), REPORT_FORMATS, field)
    title, blocks = report_blocks(model, gpu, run, command)
    if fmt == "html":
        write_bytes(target, render_html(title, blocks), field)
        return [target]
    images = {block.name: f"{target.stem}_{block.name}.png" for block in blocks if block.kind == "figure"}
    written = []
    for block in blocks:
        if block.kind == "figure":
            image = target.with_name(images[block.name])
            write_bytes(image, block.png, field)
            written.append(image)
    write_bytes(target, render_markdown(title, blocks, images), field)
    return [target, *written]
