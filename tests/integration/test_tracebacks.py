"""TensorFlow's errors stay readable: between the user's line and TensorFlow's frames, at
most two of convfix's (the wrapper and the frame that re-raises), the error object intact;
whole tracebacks where TensorFlow's own filtering is off (integrations/tracebacks.py)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator

import pytest
import tensorflow as tf

import convfix

pytestmark = pytest.mark.compat


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as error:  # any error: its traceback is the subject
        return error
    raise AssertionError("the call did not raise")


def _frames(error: BaseException) -> list[str]:
    """Who owns each frame: "test" (this file), "convfix", or "tensorflow"."""
    owners = []
    for frame in traceback.extract_tb(error.__traceback__):
        name = frame.filename
        if name == __file__:
            owners.append("test")
        elif "convfix" in name and "site-packages/tensorflow" not in name:
            owners.append("convfix")
        else:
            owners.append("tensorflow")
    return owners


def _assert_short(error: BaseException) -> None:
    owners = _frames(error)
    user = max(i for i, owner in enumerate(owners) if owner == "test")  # the calling line
    ours = [i for i, owner in enumerate(owners) if owner == "convfix"]
    assert 1 <= len(ours) <= 2, owners
    assert ours == list(range(user + 1, user + 1 + len(ours))), owners  # right below it
    assert all(owner == "tensorflow" for owner in owners[user + 1 + len(ours) :]), owners


@pytest.fixture
def filtering() -> Iterator[None]:
    was = tf.debugging.is_traceback_filtering_enabled()
    tf.debugging.enable_traceback_filtering()
    yield
    if not was:
        tf.debugging.disable_traceback_filtering()


MISMATCH = (tf.ones([1, 5, 5, 3], tf.float64), tf.ones([3, 3, 3, 2]))


@pytest.mark.usefixtures("filtering")
def test_warn_mode_reraises_tensorflows_error_with_two_frames_of_ours() -> None:
    with convfix.override(mode="warn"):
        error = _raised(lambda: tf.nn.conv2d(*MISMATCH, 1, "SAME"))
    assert isinstance(error, tf.errors.InvalidArgumentError)
    _assert_short(error)


@pytest.mark.usefixtures("filtering")
def test_the_full_path_reraises_with_two_frames_of_ours_too() -> None:
    # depthwise always takes the full path (its dilations need checking)
    x, k = tf.ones([1, 5, 5, 3], tf.float64), tf.ones([3, 3, 3, 1])
    with convfix.override(mode="warn"):
        error = _raised(lambda: tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME"))
    assert isinstance(error, tf.errors.InvalidArgumentError)
    _assert_short(error)


@pytest.mark.usefixtures("filtering")
def test_a_refusal_shows_two_frames_of_ours_and_keeps_its_message() -> None:
    with convfix.override(mode="strict"):
        error = _raised(lambda: tf.nn.conv2d(*MISMATCH, 1, "same"))
    assert isinstance(error, convfix.ConvFixError)
    assert "padding_case" in str(error) and "dtype_mismatch" in str(error)
    owners = _frames(error)
    assert owners[0] == "test" and owners.count("convfix") <= 2, owners


@pytest.mark.usefixtures("filtering")
def test_the_error_object_its_cause_and_context_are_kept() -> None:
    # TensorFlow raises its errors `from None`: no cause shown, the context suppressed
    with convfix.override(mode="off"):
        bare = _raised(lambda: tf.nn.conv2d(*MISMATCH, 1, "SAME"))
    with convfix.override(mode="warn"):
        error = _raised(lambda: tf.nn.conv2d(*MISMATCH, 1, "SAME"))
    assert type(error) is type(bare) and str(error) == str(bare)
    assert (error.__cause__, error.__suppress_context__) == (bare.__cause__, True)


def test_without_tensorflows_filtering_the_traceback_stays_whole() -> None:
    was = tf.debugging.is_traceback_filtering_enabled()
    tf.debugging.disable_traceback_filtering()
    try:
        with convfix.override(mode="warn"):
            error = _raised(lambda: tf.nn.depthwise_conv2d(
                tf.ones([1, 5, 5, 3], tf.float64), tf.ones([3, 3, 3, 1]), [1, 1, 1, 1], "SAME"
            ))  # fmt: skip
    finally:
        if was:
            tf.debugging.enable_traceback_filtering()
    assert _frames(error).count("convfix") > 2  # the pipeline's frames, for debugging
