"""What the recovery tests (split_batch, device_fallback, max_batch_bytes) share."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def conv_operands(
    batch: int, size: int, channels: int = 3, filters: int = 4, seed: int | None = None
) -> tuple[Any, Any]:
    """x[batch, size, size, channels] and k[3, 3, channels, filters], float32, seeded."""
    rng = np.random.default_rng(batch if seed is None else seed)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)).astype(np.float32))
    k = tf.constant(rng.normal(size=(3, 3, channels, filters)).astype(np.float32))
    return x, k


def relative(a: Any, b: Any) -> float:
    """‖a - b‖ / ‖b‖ in float64 (the issue's bound for a split against the whole call)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / norm if norm else diff
