"""``report.md`` for a pipeline run: the tables and figures each stage left behind, plus timings.

The report only quotes what this run's finished, current stages wrote: a stage that did not run,
is not part of this run (label quality without true masks) or is out of date leaves its section
saying so, whatever an earlier run left in the folder.
"""

from __future__ import annotations

import os
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path

from cxrdoll.constants import COMPETITION_OBSERVATIONS, OBSERVATIONS
from cxrdoll.io import read_json, write_text_atomic


def classifier_table(registry_path: Path) -> str:
    if not registry_path.exists():
        return "_No classifiers registered._\n"
    registry = read_json(registry_path)
    entries = registry["classifiers"]
    lines = [
        "Validation AUROC of the best epoch per architecture (blank: only one class present in validation); "
        f"the competition five are {', '.join(COMPETITION_OBSERVATIONS)}.",
        "",
        "| observation | " + " | ".join(e["name"] for e in entries) + " |",
        "|---|" + "---|" * len(entries),
    ]
    for obs in OBSERVATIONS:
        cells = [_fmt(e["auroc"].get(obs)) for e in entries]
        lines.append(f"| {obs} | " + " | ".join(cells) + " |")
    lines.append("| **mean of the competition five** | "
                 + " | ".join(f"**{_fmt(e['mean_auroc'])}**" for e in entries) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _section_from(path: Path) -> str:
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the report's own section heading replaces the file's title
    # Demote the file's headings so they nest under the report's section heading.
    return "\n".join(("#" + line) if line.startswith("#") else line for line in lines) + "\n"


def timing_table(timings_path: Path, stages: list[str]) -> str:
    """The recorded timings of ``stages``, in their order."""
    recorded = read_json(timings_path) if timings_path.exists() else {}
    timings = {name: recorded[name] for name in stages if name in recorded}
    if not timings:
        return "_No timings recorded._\n"
    lines = ["| stage | wall time (s) | peak memory of its processes (GB) |", "|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['seconds']:.0f} | {t['peak_child_rss_gb']:.2f} |")
    total = sum(t["seconds"] for t in timings.values())
    lines.append(f"| **total** | **{total:.0f}** | |")
    return "\n".join(lines) + "\n"


def environment() -> str:
    import monai
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {device} · Python {platform.python_version()} · "
            f"torch {torch.__version__} · MONAI {monai.__version__}")


def write_report(work: Path, title: str, commands_log: Path, stages: list[str], done: list[str]) -> Path:
    """Assemble ``work/report.md`` from the outputs of ``done``, the stages of this run (``stages``)
    that are finished and current; figures are copied under ``work/figures`` so the folder is
    self-contained."""
    figures = work / "figures"
    if figures.exists():
        shutil.rmtree(figures)
    figures.mkdir()
    parts = [f"# {title}", "", environment(), "",
             f"Every stage's command is in [`{commands_log.name}`]({commands_log.name}); re-running the pipeline "
             "skips finished stages.", ""]

    def not_run(stage: str) -> str:
        return f"_The {stage} stage has not run in this folder with this run's settings and inputs._\n"

    parts += ["## Classifiers", "", classifier_table(work / "classifiers" / "classifiers.json")
              if "classifiers" in done else not_run("classifiers")]
    if "label-quality" in done:
        quality = _section_from(work / "label_quality" / "label_quality.md")
    elif "label-quality" not in stages:
        quality = "_No true masks for this data, so label quality was not scored._\n"
    else:
        quality = not_run("label-quality")
    parts += ["## DoLL label quality", "", quality]
    overlays = sorted((work / "labels" / "doll_ig" / "overlays").glob("*.png"))[:4] if "labels" in done else []
    if overlays:
        parts += ["### DoLL overlays", "", "Image, then each positive observation's soft map with its mask outline.", ""]
        for src in overlays:
            dest = figures / f"doll_{src.name}"
            shutil.copyfile(src, dest)
            parts.append(f"![{src.stem}](figures/{dest.name})")
        parts.append("")
    parts += ["## Sample efficiency (downstream fine-tuning)", ""]
    if "finetune" in done:
        parts.append(_section_from(work / "sample_efficiency" / "results.md"))
        plot = work / "sample_efficiency" / "results.png"
        if plot.exists():
            shutil.copyfile(plot, figures / "sample_efficiency.png")
            parts += ["![sample efficiency](figures/sample_efficiency.png)", ""]
    else:
        parts.append(not_run("finetune"))
    parts += ["## Timings", "", timing_table(work / "timings.json", done)]
    path = work / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path
