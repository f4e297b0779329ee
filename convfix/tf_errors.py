"""Which TensorFlow errors the recovery policies claim, classified in one place.

By type first, message second: an out-of-memory is TensorFlow's ResourceExhaustedError,
whatever its text; a DNN initialisation failure has no type of its own (TensorFlow raises
UnknownError, InternalError or NotFoundError), so among those types the message decides.
The patterns are the texts TensorFlow and cuDNN print for the article's title error and
its relatives (tf-facts.md; TensorFlow issues #24496, #24828, #41886, #43761).
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

Kind = Literal["out_of_memory", "dnn_init_failed"]

# The error types a DNN initialisation failure arrives as.
DNN_ERROR_TYPES: tuple[type[Exception], ...] = (
    tf.errors.UnknownError,
    tf.errors.InternalError,
    tf.errors.NotFoundError,
)

# Substrings (matched case-sensitively, as TensorFlow prints them) that mark one.
DNN_MESSAGE_PATTERNS: tuple[str, ...] = (
    "Failed to get convolution algorithm",
    "cuDNN failed to initialize",
    "DNN library is not found",
    "CUDNN_STATUS_",
)

# What to tell a user whose calls fell back to another device.
DNN_HINT = (
    "cuDNN could not start; known causes: TensorFlow pre-allocated nearly all GPU memory "
    "(set [gpu] memory_growth = true in convfix.toml, or TF_FORCE_GPU_ALLOW_GROWTH=true), "
    "a CUDA/cuDNN version that does not match TensorFlow's build "
    "(tf.sysconfig.get_build_info() names the expected ones), or another process holding "
    "the GPU (nvidia-smi)"
)
OOM_HINT = (
    "the call did not fit in device memory even split into the smallest chunks allowed; "
    "known causes: TensorFlow pre-allocated nearly all GPU memory ([gpu] memory_growth = "
    "true), another process holding the GPU, or a batch too large for the device"
)


def classify(error: BaseException) -> Kind | None:
    """What kind of failure ``error`` is, if a recovery policy can act on it."""
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return "out_of_memory"
    if isinstance(error, DNN_ERROR_TYPES):
        message = str(error)
        if any(pattern in message for pattern in DNN_MESSAGE_PATTERNS):
            return "dnn_init_failed"
    return None


def hint(kind: Kind) -> str:
    return DNN_HINT if kind == "dnn_init_failed" else OOM_HINT
