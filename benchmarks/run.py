"""Run every convfix benchmark question in one process and print one table.

    python benchmarks/run.py            # full run, well under a minute on two cores
    python benchmarks/run.py --quick    # smoke run: fewer pairs, numbers only indicative
    python benchmarks/run.py --json     # machine-readable results on stdout
    python benchmarks/run.py --profile  # also where the wrapper's time goes (profile_wrapper)

Exits 0 even when a goal is missed: benchmarks report, tests assert. A missed goal is marked
MISSED in its row and in the summary line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from _report import Options, Result, main
from bench_dtype_repair import dtype_repair
from bench_healthy_path import tiny_call, typical_layer
from bench_keras_fit import keras_fit
from bench_keras_layer import keras_layer
from bench_padding_repair import padding_repair, padding_repair_tensor
from bench_split_batch import first_oom, peak_memory, steady_state
from bench_tf_function import tf_function_graph

QUESTIONS: list[Callable[[Options], Result]] = [
    typical_layer,
    tiny_call,
    keras_layer,
    keras_fit,
    dtype_repair,
    padding_repair,
    padding_repair_tensor,
    tf_function_graph,
    first_oom,
    steady_state,
    peak_memory,
]


def _profile(options: Options) -> str:
    from profile_wrapper import profile

    return profile(quick=options.quick)


if __name__ == "__main__":
    sys.exit(main(QUESTIONS, __doc__ or "", profile=_profile))
