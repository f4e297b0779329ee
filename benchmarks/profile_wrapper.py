"""Where does the wrapper's time go on a healthy call? Nanoseconds per part, two ways.

Not a goal with a pass/fail: the table says whether the healthy path is cheap enough, this
says what to shave when it is not.

- **isolated**: each part alone in a micro-loop, the loop's own cost subtracted, best of
  several repeats. This is the part's cost with the CPU's caches full of nothing but it.
- **in context**: each part put in front of a real tiny conv2d (1x8x8x3, fresh input each
  call), measured as time added over TensorFlow alone. Alternating with a big C++ op, Python
  code runs with cold caches and branch predictors and costs several times its isolated
  figure; this is the number the benchmark table sees.

Run alone: ``python benchmarks/profile_wrapper.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from _setup import BACKSTOP_CONV2D, original, prepare, unpatched

REPEATS = 7
TINY_X, TINY_K = (1, 8, 8, 3), (3, 3, 3, 4)


@dataclass(frozen=True)
class Parts:
    """The pieces of the healthy path, built around conv2d's original or a no-op."""

    k: Any
    seed: Any
    fast: Callable[[tuple[Any, ...], dict[str, Any]], bool]
    quick: Callable[[Any, Any, Any, Any], bool] | None
    installed: Callable[..., Any]
    tf_conv2d: Callable[..., Any]


@dataclass(frozen=True)
class Variant:
    """One way of making the call, and the context it must run in."""

    name: str
    call: Callable[..., Any]
    context: Callable[[], AbstractContextManager[object]] = field(default=contextlib.nullcontext)


def build() -> Parts:
    tf = prepare()
    from convfix.integrations import tensorflow as tf_integration
    from convfix.integrations.entry import FilterShapes, make_fast_check
    from convfix.memory import Memory
    from convfix.ops import V2_SPECS

    caps = tf_integration.caps
    if caps is None:
        raise SystemExit("convfix did not patch TensorFlow: nothing to profile")
    tf_conv2d = original(tf.nn.conv2d)
    fast = make_fast_check(V2_SPECS["conv2d"], tf_conv2d, caps, FilterShapes(caps), Memory())
    quick = getattr(tf.nn.conv2d, "__convfix_quick__", None)  # the express lane's check
    k, seed = tf.random.normal(TINY_K), tf.random.normal(TINY_X)
    return Parts(k, seed, fast, quick, tf.nn.conv2d, tf_conv2d)


def _loop_ns(fn: Callable[[Any], object], items: Sequence[Any]) -> int:
    gc.disable()  # a collection inside one loop and not its twin would be an artefact
    try:
        start = time.perf_counter_ns()
        for x in items:
            fn(x)
        return time.perf_counter_ns() - start
    finally:
        gc.enable()


def isolated_ns(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Best-of-REPEATS nanoseconds per call of ``fn``, minus the loop's own cost."""
    best = min(_loop_ns(fn, items) for _ in range(REPEATS))
    empty = min(_loop_ns(lambda x: None, items) for _ in range(REPEATS))
    return (best - empty) / len(items)


def isolated(p: Parts, n: int) -> list[tuple[str, float]]:
    """Each part alone in a micro-loop, on one tensor (its TensorShape cached)."""
    from convfix import runtime

    flags = runtime.flags
    items = [p.seed] * n
    k = p.k
    gate = lambda x: flags.fast  # noqa: E731
    quick = p.quick or (lambda x, f, padding, strides: False)

    return [
        ("gate: flags.fast read", isolated_ns(gate, items)),
        ("x.dtype", isolated_ns(lambda x: x.dtype, items)),
        ("x.shape (cached TensorShape)", isolated_ns(lambda x: x.shape, items)),
        ("quick check (express lane)", isolated_ns(lambda x: quick(x, k, "SAME", 1), items)),
        ("fast_check(args, kwargs)", isolated_ns(lambda x: p.fast((x, k, 1, "SAME"), {}), items)),
    ]


def variants(p: Parts) -> list[Variant]:
    """Variants that each add one piece in front of TensorFlow's own conv2d."""
    fast, tf_conv2d = p.fast, p.tf_conv2d
    clean = lambda: unpatched(BACKSTOP_CONV2D)  # noqa: E731 - TensorFlow with no convfix beneath

    def closure(*args: Any, **kwargs: Any) -> Any:
        return tf_conv2d(*args, **kwargs)

    def with_fast(*args: Any, **kwargs: Any) -> Any:
        fast(args, kwargs)
        return tf_conv2d(*args, **kwargs)

    quick = p.quick or (lambda x, f, padding, strides: False)

    def with_quick(input: Any, filters: Any, strides: Any, padding: Any) -> Any:
        quick(input, filters, padding, strides)
        return tf_conv2d(input, filters, strides, padding)

    return [
        Variant("tensorflow alone", tf_conv2d, clean),
        Variant("+ plain closure pass-through", closure, clean),
        Variant("+ closure with fast_check only", with_fast, clean),
        Variant("+ function with the quick check only", with_quick, clean),
        Variant("convfix entry, gen op restored", p.installed, clean),
        Variant("convfix as installed", p.installed),
        Variant("conv2d original", tf_conv2d),
    ]


def in_context(p: Parts, calls: int, rounds: int) -> list[tuple[str, float]]:
    """Nanoseconds each variant adds over TensorFlow alone: median over rounds, each round
    timing every variant once in a rotated order so drift hits all of them alike."""
    vs = variants(p)
    base = vs[0].name
    times: dict[str, list[float]] = {v.name: [] for v in vs}
    for r in range(rounds):
        for v in vs[r % len(vs) :] + vs[: r % len(vs)]:
            times[v.name].append(_time_variant(v, p, calls))
    rows = [(f"{base} (absolute, not added)", statistics.median(times[base]))]
    for v in vs[1:]:
        # Differences within a round, then the median: a disturbed round drops out.
        rows.append((v.name, statistics.median(map(float.__sub__, times[v.name], times[base]))))
    return rows


def _time_variant(v: Variant, p: Parts, calls: int) -> float:
    k = p.k
    inputs = [p.seed + 0.0 for _ in range(calls)]  # fresh tensors, made before the clock
    with v.context():
        v.call(inputs[0], k, 1, "SAME")  # warm-up
        return _loop_ns(lambda x: v.call(x, k, 1, "SAME"), inputs) / calls


def report(title: str, rows: Sequence[tuple[str, float]]) -> str:
    width = max(len(title), *(len(name) for name, _ in rows))
    lines = [f"{title:<{width}} | ns/call", f"{'-' * width}-|--------"]
    lines += [f"{name:<{width}} | {ns:7.0f}" for name, ns in rows]
    return "\n".join(lines)


def profile(quick: bool = False) -> str:
    """Both tables, as text."""
    p = build()
    iso = isolated(p, 2_000 if quick else 20_000)
    ctx = in_context(p, calls=200 if quick else 500, rounds=5 if quick else 21)
    return "\n\n".join(
        [
            report("isolated, micro-loop", iso),
            report("in context: added to a tiny conv2d (1x8x8x3)", ctx),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter loops, fewer rounds")
    args = parser.parse_args(argv)
    print(profile(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
