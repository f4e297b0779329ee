"""The guard before dispatch: the rules (guard.rules) applied to one bound call, in order.

Always on (unless mode = "off"). It reports structural problems; a policy may own the
repair (batch_dim, padding); what nobody repairs and is unsafe is refused by the pipeline.
"""

from __future__ import annotations

from convfix.call import Call, Problem, spatial_rank
from convfix.geometry import static_shape
from convfix.guard import output_shape, rules
from convfix.guard.build import Build


def inspect(call: Call, build: Build) -> list[Problem]:
    """Structural problems of ``call`` on ``build`` (empty list: nothing the guard objects
    to). At most one: each rule assumes the ones before held."""
    x_shape = static_shape(call.input)
    f_shape = static_shape(call.filter)
    spatial = spatial_rank(call, f_shape, x_shape)
    if x_shape is None or spatial is None or spatial not in (1, 2, 3):
        return []  # unknown rank: TensorFlow validates at run time (see docs on graphs)
    found = rules.input_rank(call, x_shape, f_shape, spatial, build) or rules.strided_dilation(
        call, spatial, x_shape, build
    )
    if found is None:  # before the others: they judge the repaired, channels-last call
        found = rules.channels_first_on_cpu(call, x_shape, spatial, build)
    if found is not None:
        return [found]
    if call.spec.kind == "transpose":  # output_shape is the caller's: checked against the input
        found = (
            rules.empty_transpose_input(call, x_shape, spatial, build)
            or output_shape.output_batch(call, x_shape)
            or output_shape.output_sizes(call, x_shape, f_shape, spatial, build)
        )
        return [] if found is None else [found]
    if f_shape is None or len(f_shape) != spatial + 2:
        return []  # TensorFlow checks filter ranks itself
    found = (
        rules.dilated_kernel_past_input(call, spatial, x_shape, f_shape, build)
        or rules.kernel_larger_than_input(call, x_shape, f_shape, spatial, build)
        or rules.empty_input(call, x_shape, build)
        or rules.misanswered_windows(call, x_shape, f_shape, spatial, build)
    )
    return [] if found is None else [found]
