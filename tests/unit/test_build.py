"""Which bugs a build has (guard/build.py), resolved from the version, oneDNN and device."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convfix.geometry import Window
from convfix.guard import rules
from convfix.guard.build import BUGS, NEWEST_MEASURED, Build, build_of
from tests.unit.builds import build
from tests.unit.standins import bind, tensor

MATRIX = [(2, minor) for minor in range(12, 22)]


@pytest.mark.parametrize("version", MATRIX, ids=lambda v: f"{v[0]}.{v[1]}")
def test_the_padding_only_window_crash_is_a_bug_of_tf_2_16_to_2_19_with_onednn(
    version: tuple[int, int],
) -> None:
    # measured: SIGSEGV on 2.16-2.19 with oneDNN; none on 2.12-2.15, 2.20, 2.21 nor with
    # oneDNN off, over an exhaustive sweep of the rule's region (README, hazard table)
    expected = (2, 16) <= version <= (2, 19)
    assert Build(version, True).has("padding_only_window_crash") is expected
    assert not Build(version, False).has("padding_only_window_crash")


@pytest.mark.parametrize("version", MATRIX, ids=lambda v: f"{v[0]}.{v[1]}")
def test_the_onednn_bugs_are_kept_on_every_version_with_onednn_only(
    version: tuple[int, int],
) -> None:
    on, off = Build(version, True), Build(version, False)
    for bug in ("rank_aborts", "empty_input_misshaped", "single_window_one_channel"):
        assert on.has(bug) and not off.has(bug)
    for bug in ("strided_dilation_wrong", "empty_conv3d_transpose_crash"):
        assert on.has(bug) and off.has(bug)


def test_a_newer_tensorflow_keeps_every_bug_not_measured_gone() -> None:
    newer = Build((2, 30), True)
    assert newer.bugs == {b.name for b in BUGS if b.until is None and b.onednn is not False}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.16.2", (2, 16)),
        ("2.21.0-rc1", (2, 21)),
        ("2.30.1", (2, 30)),
        ("nightly", NEWEST_MEASURED),
    ],
)
def test_versions_are_read_as_major_minor(version: str, expected: tuple[int, int]) -> None:
    assert build_of(version, True).tensorflow == expected


def test_a_gpu_only_bug_needs_a_visible_gpu() -> None:
    from convfix.guard.build import Bug

    bug = Bug("example", None, "nowhere", device="gpu")
    assert not bug.present(Build((2, 21), True))
    assert bug.present(Build((2, 21), True, gpu=True))


# -- the rule ---------------------------------------------------------------------------


def _spans_in_padding(w: Window) -> bool:
    """Brute force: some window's span [start, start + kernel) misses the input."""
    lo = w.pads[0]
    return any(
        i * w.stride + w.kernel - 1 < lo or i * w.stride >= lo + w.size for i in range(w.out)
    )


@given(
    size=st.integers(1, 9),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 5),
    lo=st.integers(0, 8),
    hi=st.integers(0, 8),
)
def test_reads_only_padding_is_the_brute_force_answer(
    size: int, kernel: int, stride: int, lo: int, hi: int
) -> None:
    padded = size + lo + hi
    out = (padded - kernel) // stride + 1 if padded >= kernel else 0
    w = Window(size, kernel, stride, (lo, hi), out)
    assert rules.reads_only_padding(w) is _spans_in_padding(w)


def test_conv2d_with_a_window_wholly_in_explicit_padding_is_an_abort_on_tf_2_17() -> None:
    # the sweep's reproduction on TF 2.16-2.19 (SIGSEGV): width 1 padded (1, 1), stride 2
    call = bind(
        "conv2d",
        tensor(3, 2, 1, 1),
        tensor(3, 1, 2, 1),
        [1, 1, 3, 2],
        [[0, 0], [0, 0], [0, 2], [1, 1]],
        data_format="NCHW",
    )
    problem = rules.misanswered_windows(call, [3, 2, 1, 1], [3, 1, 2, 1], 2, build(True, (2, 17)))
    assert problem is not None
    assert (problem.reason, problem.owner, problem.hazard) == (
        "padding_only_window",
        "padding",
        "abort",
    )
    for unaffected in (build(True, (2, 21)), build(True, (2, 15)), build(False, (2, 17))):
        assert rules.misanswered_windows(call, [3, 2, 1, 1], [3, 1, 2, 1], 2, unaffected) is None


def test_explicit_padding_smaller_than_the_kernel_is_never_a_padding_only_window() -> None:
    # the usual explicit padding: (1, 1) around a 3-wide kernel
    call = bind(
        "conv2d", tensor(1, 5, 5, 2), tensor(3, 3, 2, 4), 2, [[0, 0], [1, 1], [1, 1], [0, 0]]
    )
    assert (
        rules.misanswered_windows(call, [1, 5, 5, 2], [3, 3, 2, 4], 2, build(True, (2, 17))) is None
    )


def test_the_readmes_hazard_table_lists_every_bug() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("**Hazards by build.**") :]
    for bug in BUGS:
        assert f"| `{bug.name}`" in table, bug.name


def test_a_tensorflow_older_than_the_oldest_measured_gets_every_rule_of_the_oldest() -> None:
    # convfix still patches TF 2.11 ("untested"): it must not lose its guard there
    older = build_of("2.11.0", True)
    assert older.tensorflow == (2, 12)
    assert older.bugs == Build((2, 12), True).bugs
    assert older.has("rank_aborts")


def test_plainly_safe_never_clears_what_the_build_crashes_on() -> None:
    # the pipeline's fallback when the guard itself failed: explicit padding on TF 2.17
    # with oneDNN, a transpose where oneDNN answers impossible shapes
    call = bind(
        "conv2d", tensor(2, 3, 1, 2), tensor(1, 1, 2, 3), 1, [[0, 0], [0, 0], [1, 1], [0, 0]]
    )
    assert rules.plainly_safe(call, build(True, (2, 21)))
    assert not rules.plainly_safe(call, build(True, (2, 17)))
    transpose = bind("conv2d_transpose", tensor(1, 3, 3, 8), tensor(3, 3, 4, 8), [1, 3, 3, 4], 1)
    assert not rules.plainly_safe(transpose, build(True, (2, 21)))
