"""Results, the table they print as, and the command line every benchmark shares."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from _timing import Comparison

MISSED = "MISSED"


@dataclass(frozen=True)
class Options:
    """What the command line asked for: a quick smoke run, a pair count, JSON output."""

    quick: bool = False
    pairs: int | None = None
    json: bool = False
    profile: bool = False

    def pairs_or(self, full: int, quick: int) -> int:
        if self.pairs is not None:
            return self.pairs
        return quick if self.quick else full


@dataclass(frozen=True)
class Result:
    """One benchmark question answered. ``ratio`` is None for a yes/no question."""

    question: str
    measured: str
    goal: str
    passed: bool
    ratio: float | None = None
    q1: float | None = None
    q3: float | None = None
    base_us: float | None = None
    subject_us: float | None = None
    pairs: int | None = None
    note: str = ""


def ratio_result(question: str, goal: float, c: Comparison, note: str = "") -> Result:
    """A timed question: passes when the median ratio is at or under ``goal``."""
    q1, q3 = c.quartiles
    return Result(
        question=question,
        measured=f"{c.median:.3f}x",
        goal=f"<= {goal:.2f}x",
        passed=c.median <= goal,
        ratio=c.median,
        q1=q1,
        q3=q3,
        base_us=c.base_us,
        subject_us=c.subject_us,
        pairs=len(c.ratios),
        note=note,
    )


_HEADERS = ("#", "question", "median", "IQR", "goal", "result", "base us/call", "pairs")


def _row(number: int, r: Result) -> tuple[str, ...]:
    iqr = f"{r.q1:.3f}-{r.q3:.3f}" if r.q1 is not None and r.q3 is not None else "-"
    base = f"{r.base_us:.1f}" if r.base_us is not None else "-"
    pairs = str(r.pairs) if r.pairs is not None else "-"
    verdict = "ok" if r.passed else f"** {MISSED} **"
    return (str(number), r.question, r.measured, iqr, r.goal, verdict, base, pairs)


def table(results: Sequence[Result]) -> str:
    """An aligned markdown table, then the notes (by row number), then the verdict line."""
    rows = [_HEADERS, *(_row(i, r) for i, r in enumerate(results, 1))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows[1:]]
    notes = [f"  [{i}] {r.note}" for i, r in enumerate(results, 1) if r.note]
    if notes:
        out += ["", "notes:", *notes]
    missed = [r.question for r in results if not r.passed]
    out.append("")
    if missed:
        out.append(f"{MISSED}: {len(missed)} of {len(results)} goals: " + "; ".join(missed))
    else:
        out.append(f"all {len(results)} goals met")
    return "\n".join(out)


def as_json(results: Sequence[Result], environment: dict[str, str]) -> str:
    return json.dumps(
        {"environment": environment, "results": [asdict(r) for r in results]}, indent=2
    )


def parse_options(
    argv: Sequence[str] | None = None, description: str = "", profile_flag: bool = False
) -> Options:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer pairs: a smoke run")
    parser.add_argument("--pairs", type=int, help="pairs of blocks per timed question")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    if profile_flag:
        parser.add_argument(
            "--profile", action="store_true", help="also break down the wrapper's cost"
        )
    args = parser.parse_args(argv)
    if args.pairs is not None and args.pairs < 2:
        parser.error("--pairs: need at least 2 for quartiles")
    return Options(
        quick=args.quick, pairs=args.pairs, json=args.json, profile=getattr(args, "profile", False)
    )


def header(environment: dict[str, str]) -> str:
    return "\n".join(f"{key:>13}: {value}" for key, value in environment.items())


def main(
    questions: Sequence[Callable[[Options], Result]],
    description: str,
    argv: Sequence[str] | None = None,
    profile: Callable[[Options], str] | None = None,
) -> int:
    """Run ``questions`` and print their table (or JSON), then ``profile``'s text if asked
    for with --profile (offered only when ``profile`` is given). Always 0: benchmarks report.
    """
    from _setup import environment, prepare

    options = parse_options(argv, description, profile_flag=profile is not None)
    prepare()
    env = environment()  # before the runs: the load average is the one they start under
    if not options.json:
        print(header(env), flush=True)
    results = []
    for question in questions:
        # Progress on stderr: a full run takes a while, and stdout may be JSON for a machine.
        print(f"running {question.__module__}.{question.__name__} ...", file=sys.stderr, flush=True)
        results.append(question(options))
    print(as_json(results, env) if options.json else "\n" + table(results), flush=True)
    if profile is not None and options.profile:
        print("\n" + profile(options), flush=True)
    return 0
