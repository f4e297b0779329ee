"""batch_dim's second repair: a transpose's ``output_shape`` whose batch is not the input's.

A transposed convolution maps each input example to one output example, so the output
batch can only be the input's: replacing ``output_shape[0]`` by the input's batch is exact
for every call TensorFlow could answer. The usual cause is a hard-coded ``[batch_size,
...]`` meeting the last, smaller batch of an epoch (tensorflow#27409).

Where the input's batch is known (eagerly, or a traced input of static batch) it is
written in as a number. Inside tf.function with an unknown batch it is read in the graph
(``tf.shape(input)[0]``: a Shape, a StridedSlice and the Pack of output_shape, measured by
tests/integration/test_transpose_output_shape.py); an output batch already read that way
from the input, as Keras passes it, is left alone by the guard's rule and costs no op.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.geometry import output_dims, static_shape

ACTION = "use_input_batch"
DESCRIPTION = "use the input's batch as output_shape's first dimension"


def repair(call: Call, problem: Problem) -> Repair:
    """The call with ``output_shape``'s batch replaced by the input's (module docstring);
    replayable (an argument rewrite) where that batch is a number."""
    x_shape = static_shape(call.input) or [None]
    batch = x_shape[0]
    value: Any = batch if batch is not None else tf.shape(call.input)[0]
    fixed = with_batch(call.arguments["output_shape"], value)
    dims = output_dims(fixed) or []
    after = {"output_shape": [d if d is not None else "?" for d in dims]}
    rewrites = None
    if batch is not None:  # a replay's key holds the input's shape: the batch is the same
        rewrites = {"output_shape": lambda old: with_batch(old, batch)}
    return Repair(call.replace(output_shape=fixed), ACTION, after, None, rewrites)


def with_batch(output_shape: Any, batch: Any) -> Any:
    """``output_shape`` with its first element replaced: a list for a list, tuple or array;
    a tensor of the same dtype for a tensor."""
    if isinstance(output_shape, tf.Tensor):
        first = tf.reshape(tf.cast(batch, output_shape.dtype), [1])
        return tf.concat([first, output_shape[1:]], 0)
    items = list(output_shape.tolist() if hasattr(output_shape, "tolist") else output_shape)
    return [batch, *items[1:]]
