"""Numbers as the packet prints them: three decimals, 'n/a' for a value that is not defined or not reported."""

from __future__ import annotations

from typing import Mapping


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """'0.912 (0.850–0.951)'; 'n/a' when there is no value; the interval as n/a when it is missing."""
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{fmt(value, digits)} (CI n/a)"
    return f"{fmt(value, digits)} ({fmt(low, digits)}–{fmt(high, digits)})"


def ci_text(ci: Mapping | None) -> str:
    """A {value, ci_low, ci_high} metric as '0.912 (0.850–0.951)'."""
    return "n/a" if ci is None else fmt_ci(ci["value"], ci.get("ci_low"), ci.get("ci_high"))


def pair_text(value: float | None, interval) -> str:
    """A value and its [low, high] interval as '0.912 (0.850–0.951)'."""
    return fmt_ci(value, interval[0], interval[1])


def criterion_text(check: Mapping) -> str:
    """A gate check's acceptance criterion, e.g. 'sensitivity >= 0.900'."""
    return f"{check['metric']} {check['comparison']} {fmt(check['threshold'])}"
