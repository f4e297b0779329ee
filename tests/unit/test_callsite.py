"""convfix.events.callsite: the user's file and line, past library frames and AutoGraph's code."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convfix.events.callsite import user_callsite

HELPER_SOURCE = "def call(fn):\n    return fn()\n"


def line_of(marker: str) -> int:
    """The line of this file that ends with ``marker`` (a comment)."""
    for number, text in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if text.rstrip().endswith(marker):
            return number
    raise AssertionError(f"no line ends with {marker!r}")


def load_helper(module_name: str, filename: str) -> Callable[[Callable[[], object]], object]:
    """A module called ``module_name`` whose code lives in ``filename``, with ``call(fn)``."""
    module = types.ModuleType(module_name)
    exec(compile(HELPER_SOURCE, filename, "exec"), module.__dict__)
    call: Callable[[Callable[[], object]], object] = module.call
    return call


def test_direct_call_reports_this_file_and_line() -> None:
    # when the test itself asks
    found, line = user_callsite(), sys._getframe().f_lineno
    # then its own file and line are the callsite
    assert found == f"{__file__}:{line}"


def test_helper_in_a_module_named_like_a_library_is_skipped(tmp_path: Path) -> None:
    # given a helper that belongs to a "keras" module
    call = load_helper("keras.src.ops.fake_helper", str(tmp_path / "fake_helper.py"))
    # when the callsite is asked for through it
    found, line = call(user_callsite), sys._getframe().f_lineno
    # then the helper is skipped and this line is reported
    assert found == f"{__file__}:{line}"


def test_user_module_shadowing_a_stdlib_name_is_user_code(tmp_path: Path) -> None:
    # given the user's own "code.py", which shares its name with a stdlib module
    path = tmp_path / "code.py"
    call = load_helper("code", str(path))
    # when the callsite is asked for through it, then the user's file is reported
    assert call(user_callsite) == f"{path}:2"


def test_stack_of_only_library_frames_has_no_callsite() -> None:
    # given a call that only stdlib frames (a thread pool's worker) lead to
    with ThreadPoolExecutor(max_workers=1) as pool:
        # when the callsite is asked for there, then there is none
        assert pool.submit(user_callsite).result() is None


def test_generated_frame_without_a_source_map_is_skipped(tmp_path: Path) -> None:
    # given AutoGraph-style generated code that no source map knows about
    generated = tmp_path / "__autograph_generated_fileabc123.py"
    call = load_helper(__name__, str(generated))
    # when the callsite is asked for through it
    found, line = call(user_callsite), sys._getframe().f_lineno
    # then the generated file is never reported; the next user frame is
    assert found == f"{__file__}:{line}"


def test_tf_function_reports_the_original_source_line_not_the_generated_file() -> None:
    tf = pytest.importorskip("tensorflow")
    # given a convfix-like probe that AutoGraph does not convert (like TensorFlow's own ops)
    probe = tf.autograph.experimental.do_not_convert(user_callsite)
    found: list[str | None] = []

    @tf.function(autograph=True)
    def model(x: object) -> object:
        found.append(probe())  # callsite: tf.function body
        return x

    # when the function is traced
    model(tf.constant(1.0))
    # then the callsite is this file's line, as the user wrote it
    assert found == [f"{__file__}:{line_of('# callsite: tf.function body')}"]


def test_tf_function_branch_reports_the_original_source_line() -> None:
    tf = pytest.importorskip("tensorflow")
    # given a probe inside a tensor-dependent `if`, which AutoGraph turns into a nested
    # function that tf.cond calls (not converted_call)
    probe = tf.autograph.experimental.do_not_convert(user_callsite)
    found: list[str | None] = []

    @tf.function(autograph=True)
    def model(x: object) -> object:
        if x > 0:  # type: ignore[operator]  # x is a tensor
            found.append(probe())  # callsite: tf.cond branch
        return x

    # when the function is traced
    model(tf.constant(1.0))
    # then the callsite is the line inside the branch
    assert found == [f"{__file__}:{line_of('# callsite: tf.cond branch')}"]


def test_tf_function_maps_through_ag_source_map_without_tf_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tf = pytest.importorskip("tensorflow")
    # given a TensorFlow whose tf_stack internals are not there (another version)
    monkeypatch.delitem(sys.modules, "tensorflow.python.util.tf_stack")
    probe = tf.autograph.experimental.do_not_convert(user_callsite)
    found: list[str | None] = []

    @tf.function(autograph=True)
    def model(x: object) -> object:
        if x > 0:  # type: ignore[operator]  # x is a tensor
            found.append(probe())  # callsite: without tf_stack
        return x

    # when the function is traced
    model(tf.constant(1.0))
    # then the converted function's own source map still finds the user's line
    assert found == [f"{__file__}:{line_of('# callsite: without tf_stack')}"]
