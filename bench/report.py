"""The figures table: rows with targets, printed as text and written as Markdown."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Format = Callable[[float], str]


def per_second(value: float) -> str:
    """``12,345/s``."""
    return f"{value:,.0f}/s"


def millis(value: float) -> str:
    """``3.2 ms``."""
    return f"{value:,.1f} ms"


def plain(value: float) -> str:
    """``2.61`` (or an integer without decimals)."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


@dataclass(frozen=True)
class Target:
    """A bound on a row's own figure, or on its ratio to the baseline."""

    limit: float
    at_least: bool
    on_ratio: bool = False

    def met(self, value: float) -> bool:
        """Whether ``value`` is within the bound."""
        if math.isnan(value):
            return False
        return value >= self.limit if self.at_least else value <= self.limit

    def text(self, fmt: Format) -> str:
        """``>= 80% of baseline``, ``<= 5.0 ms``."""
        sign = ">=" if self.at_least else "<="
        return f"{sign} {self.limit:.0%} of baseline" if self.on_ratio else f"{sign} {fmt(self.limit)}"


@dataclass(frozen=True)
class Row:
    """One metric: our figure, an optional baseline, an optional target, and why a miss happens."""

    metric: str
    ours: float
    fmt: Format
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    why: str = ""

    @property
    def ratio(self) -> float | None:
        """Ours divided by the baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None`` without a target)."""
        if self.target is None:
            return None
        value = self.ratio if self.target.on_ratio else self.ours
        return self.target.met(float("nan") if value is None else value)

    def cells(self) -> list[str]:
        """metric, ours, baseline, ratio, target, met?"""
        baseline = "" if self.baseline is None else f"{self.fmt(self.baseline)} ({self.baseline_name})"
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        target = "" if self.target is None else self.target.text(self.fmt)
        met = {None: "", True: "yes", False: "NO"}[self.met]
        return [self.metric, self.fmt(self.ours), baseline, ratio, target, met]

    def miss(self) -> str:
        """By how much the target is missed, in words."""
        if self.target is None or self.met is not False:
            return ""
        if self.target.on_ratio:
            got, want = (self.ratio or 0.0), self.target.limit
            return f"{got:.0%} of the baseline against {want:.0%} ({(want - got) * 100:.0f} points short)"
        want = self.target.limit
        off = abs(self.ours - want) / want if want else float("inf")
        side = "short" if self.target.at_least else "over"
        return f"{self.fmt(self.ours)} against {self.target.text(self.fmt)} ({off:.0%} {side})"


HEADERS = ["metric", "ours", "baseline", "ratio", "target", "met?"]


def text_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table."""
    cells = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)


def misses(rows: Sequence[Row]) -> str:
    """The Markdown list of missed targets: by how much and why."""
    missed = [row for row in rows if row.met is False]
    if not missed:
        return "Every target was met in this run."
    return "\n".join(f"- **{row.metric}**: {row.miss()}. {row.why}".rstrip() for row in missed)


def markdown(title: str, preamble: Sequence[str], rows: Sequence[Row], sections: Sequence[tuple[str, str]]) -> str:
    """The whole report: preamble lines, the figures table, the misses, then further sections."""
    parts = [f"# {title}", "\n".join(preamble), "## Figures", markdown_table(HEADERS, [row.cells() for row in rows])]
    parts += ["## Where a target is missed, by how much and why", misses(rows)]
    for heading, body in sections:
        parts += [f"## {heading}", body]
    return "\n\n".join(parts) + "\n"
