"""Paired, interleaved block timing: robust ratios on a noisy shared machine.

A single A-vs-B timing on two busy cores says more about the neighbours than about the code.
So each pair times a block of the subject and a block of the baseline back to back, in
alternating order, and only the ratio within a pair is kept: drift slower than one pair
cancels, and the median over pairs shrugs off the pairs a neighbour disturbed.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what one call does, and the context its blocks run in."""

    name: str
    call: Callable[[Any], object]
    context: Callable[[], AbstractContextManager[object]] = field(default=contextlib.nullcontext)


@dataclass(frozen=True)
class Plan:
    """How much to time: pairs of blocks, calls per block, untimed warm-up calls per block."""

    pairs: int
    calls: int
    warmup: int = 5


@dataclass(frozen=True)
class Comparison:
    """Per-pair ratios (subject / baseline) and the per-call times behind them."""

    ratios: list[float]
    subject_ns: list[float]
    base_ns: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def quartiles(self) -> tuple[float, float]:
        q1, _, q3 = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return q1, q3

    @property
    def base_us(self) -> float:
        return statistics.median(self.base_ns) / 1000.0

    @property
    def subject_us(self) -> float:
        return statistics.median(self.subject_ns) / 1000.0


def time_block(call: Callable[[Any], object], inputs: Sequence[Any]) -> int:
    """Nanoseconds to call ``call`` once on each input, with the collector paused.

    A collection landing in one block of a pair but not the other would be a pure artefact;
    pausing it for both keeps the pair honest. No per-call sync: eager CPU ops are synchronous.
    """
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for x in inputs:
            call(x)
        return time.perf_counter_ns() - start
    finally:
        if gc_was_on:
            gc.enable()


def run_side(side: Side, make_inputs: Callable[[int], Sequence[Any]], plan: Plan) -> float:
    """Warm up, then time one block of ``side``; returns nanoseconds per call."""
    # Inputs are made before the clock starts: creating a tensor costs as much as a tiny
    # convolution, and every call must get a fresh one, as in a real input pipeline.
    warm = make_inputs(plan.warmup)
    inputs = make_inputs(plan.calls)
    with side.context():
        for x in warm:
            side.call(x)
        elapsed = time_block(side.call, inputs)
    return elapsed / plan.calls


def compare(
    subject: Side,
    base: Side,
    make_inputs: Callable[[int], Sequence[Any]],
    plan: Plan,
) -> Comparison:
    """Interleaved pairs of blocks; the side that goes first alternates every pair."""
    ratios: list[float] = []
    subject_ns: list[float] = []
    base_ns: list[float] = []
    for i in range(plan.pairs):
        if i % 2 == 0:
            s = run_side(subject, make_inputs, plan)
            b = run_side(base, make_inputs, plan)
        else:
            b = run_side(base, make_inputs, plan)
            s = run_side(subject, make_inputs, plan)
        subject_ns.append(s)
        base_ns.append(b)
        ratios.append(s / b)
    return Comparison(ratios, subject_ns, base_ns)


def compare_alternating(
    subject: Side,
    base: Side,
    make_inputs: Callable[[int], Sequence[Any]],
    plan: Plan,
) -> Comparison:
    """Like :func:`compare`, but each pair is one block whose calls alternate between the
    sides (ABBA, one call at a time, each timed alone); its ratio is the ratio of the two
    sides' median call times. Drift slower than one call cancels and a call a neighbour
    disturbed drops out of the median: on this 2-core VM the tiny call's IQR narrows from
    about +-8% (blocks) to +-0.5%. Both sides' contexts hold for the whole block, so they
    must not change what the other side runs (bench_healthy_path checks that)."""
    ratios: list[float] = []
    subject_ns: list[float] = []
    base_ns: list[float] = []
    sides = (subject, base)
    clock = time.perf_counter_ns
    for _ in range(plan.pairs):
        inputs = [make_inputs(plan.calls) for _ in sides]
        times: tuple[list[int], list[int]] = ([], [])
        with subject.context(), base.context():
            for side, warm in zip(sides, make_inputs(plan.warmup)):
                side.call(warm)
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                for i in range(plan.calls):
                    for s in (0, 1) if i % 4 in (0, 3) else (1, 0):
                        x = inputs[s][i]
                        started = clock()
                        sides[s].call(x)
                        times[s].append(clock() - started)
            finally:
                if gc_was_on:
                    gc.enable()
        s_med, b_med = statistics.median(times[0]), statistics.median(times[1])
        subject_ns.append(s_med)
        base_ns.append(b_med)
        ratios.append(s_med / b_med)
    return Comparison(ratios, subject_ns, base_ns)
