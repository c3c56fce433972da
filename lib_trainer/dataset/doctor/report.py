"""Findings and the report: each finding has a severity, a one-line reason and what to do.

The report is saved as `dataset_doctor.json` and `dataset_doctor.md` in the dataset folder
(next to the `<repeats>_<concept>` folders, where the scan ignores plain files), only when
the user asks for it, and written atomically.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from ...fileio import write_text_atomic

PROBLEM, LOOK, FINE = "problem", "worth a look", "fine"
SEVERITIES = (PROBLEM, LOOK, FINE)
REPORT_NAME = "dataset_doctor"


@dataclass
class Finding:
    severity: str
    check: str  # short name of the check: "upscaled", "blur", "near duplicate", ...
    reason: str  # one line: what was measured
    action: str  # one line: what to do
    paths: list[str] = field(default_factory=list)  # images it is about (two for a duplicate pair)
    concept: str = ""  # folder name, when it is about one concept
    data: dict = field(default_factory=dict)  # the measured values, for the UI and the JSON


@dataclass
class ImageRow:
    """One image's measurements, for the per-image table and its thumbnail."""
    path: str
    concept: str
    size: tuple[int, int]
    bucket: tuple[int, int]
    bucket_images: int  # images (not x repeats) in the same bucket
    scale: float  # > 1: the trainer enlarges it
    sharpness: float
    brightness: float
    contrast: float
    alpha: bool
    exif_rotated: bool


@dataclass
class Report:
    dataset: str
    resolution: tuple[int, int]
    findings: list[Finding] = field(default_factory=list)
    images: list[ImageRow] = field(default_factory=list)
    tag_frequency: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # concept -> (tag, images)
    concepts: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted.get(severity, 0) for severity in SEVERITIES}

    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == PROBLEM]

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity))

    def headline(self) -> str:
        counts = self.counts()
        return (f"{len(self.images)} images checked: {counts[PROBLEM]} problems, {counts[LOOK]} worth a look, "
                f"{counts[FINE]} fine")

    def findings_for(self, path: str) -> list[Finding]:
        return [f for f in self.findings if path in f.paths]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        lines = [f"# Dataset doctor: {self.dataset}", "", self.headline(),
                 f"Training resolution {self.resolution[0]}x{self.resolution[1]}.", ""]
        lines += ["| severity | check | reason | what to do |", "|---|---|---|---|"]
        for f in self.sorted_findings():
            cells = [f.severity, f.check, f.reason, f.action]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if self.concepts:
            lines += ["", "## Concepts", "", "| folder | images | repeats | share of the epoch |", "|---|---|---|---|"]
            for c in self.concepts:
                lines.append(f"| {_cell(c['folder'])} | {c['images']} | {c['repeats']} | {c['share']:.0%} |")
        for concept, table in self.tag_frequency.items():
            lines += ["", f"## Tags of {concept}", "", "| tag | images |", "|---|---|"]
            lines += [f"| {_cell(tag)} | {count} |" for tag, count in table[:50]]
        return "\n".join(lines) + "\n"

    def save(self, folder: str | None = None) -> tuple[str, str]:
        """Write the JSON and Markdown reports (atomically); returns their paths."""
        stem = os.path.join(folder or self.dataset, REPORT_NAME)
        write_text_atomic(stem + ".json", self.to_json())
        write_text_atomic(stem + ".md", self.to_markdown())
        return stem + ".json", stem + ".md"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
