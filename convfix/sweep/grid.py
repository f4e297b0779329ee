"""The sweep's grid: small convolution calls drawn reproducibly, each pasteable as one line.

A call is a ``Case``, described by shapes and arguments only; its operands are small
integers from ``tf.random.stateless_uniform`` seeded by the case, so the one-line repro
(``Case.repro``) builds exactly the tensors the sweep ran. Integers 1 to 3 are exact in
every dtype, and the sums of their products are exact in float32 accumulation: a wrong
value is an error of the kernel, not of rounding (only the 16-bit outputs round). None is
zero, so no output a window reads input for is zero: a part of the answer left unwritten
(zeros, in a fresh buffer) cannot pass for right.

Case ``i`` of seed ``s`` depends on nothing else, so a sweep cut short by its budget is a
prefix of a longer one. Pure Python, no TensorFlow, no NumPy: the parent process of a
sweep draws the cases and never imports either.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

OPS = (
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "depthwise_conv2d",
    "separable_conv2d",
    "conv1d_transpose",
    "conv2d_transpose",
    "conv3d_transpose",
)
"""The coverage list: every public ``tf.nn`` convolution convfix wraps (TF2 names)."""

KIND = {
    "depthwise_conv2d": "depthwise",
    "separable_conv2d": "separable",
    "conv1d_transpose": "transpose",
    "conv2d_transpose": "transpose",
    "conv3d_transpose": "transpose",
}
SPATIAL = {"conv1d": 1, "conv3d": 3, "conv1d_transpose": 1, "conv3d_transpose": 3}
# The ops whose padding argument takes an explicit list (measured, TF 2.21: the others
# raise TypeError "Expected string for argument 'padding'").
EXPLICIT = ("conv2d", "depthwise_conv2d", "separable_conv2d", "conv2d_transpose")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int32")
_DTYPE_WEIGHTS = (40, 15, 15, 15, 15)
_CHANNELS_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
_CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}

Padding = str | tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Case:
    """One convolution call, by shapes and arguments (operands come from ``seed``).

    ``x_shape`` is the input (a transpose's: the gradient-side input it takes first);
    ``strides`` and ``dilations`` hold one value per spatial dimension and ``padding``
    explicit pairs per spatial dimension: ``arguments`` puts them in the form the op takes.
    """

    index: int
    op: str
    x_shape: tuple[int, ...]
    f_shape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    padding: Padding
    channels_first: bool
    dtype: str
    seed: int
    out_shape: tuple[int, ...] | None = None  # a transpose's output_shape
    p_shape: tuple[int, ...] | None = None  # separable_conv2d's pointwise filter

    @property
    def kind(self) -> str:
        """conv, depthwise, separable or transpose."""
        return KIND.get(self.op, "conv")

    @property
    def spatial(self) -> int:
        return len(self.f_shape) - 2

    @property
    def rank_short(self) -> int:
        """How many dimensions the input lacks (0: the rank the op needs)."""
        return self.spatial + 2 - len(self.x_shape)

    @property
    def data_format(self) -> str | None:
        """The data_format argument as passed (None: the op's default)."""
        if self.channels_first:
            return _CHANNELS_FIRST[self.spatial]
        return None

    @property
    def risky(self) -> bool:
        """Known to kill the process on some build, so run alone: an input rank short
        (oneDNN aborts), Conv3D SAME with a dilated kernel longer than the input (oneDNN
        corrupts the heap), conv3d_transpose of an input with an empty spatial dimension
        (TF 2.21's Conv3DBackpropInput outside oneDNN: SIGSEGV; found by this sweep)."""
        if self.rank_short:
            return True
        if self.op == "conv3d_transpose":
            return 0 in (self.x_shape[2:] if self.channels_first else self.x_shape[1:-1])
        if self.op != "conv3d" or self.padding != "SAME" or max(self.dilations) < 2:
            return False
        sizes = self.x_shape[2:] if self.channels_first else self.x_shape[1:-1]
        kernel = [_dilated(k, d) for k, d in zip(self.f_shape, self.dilations)]
        return any(k > n for k, n in zip(kernel, sizes))

    def arguments(self) -> dict[str, Any]:
        """The call's arguments besides its operands, by TensorFlow's parameter names, in
        the form the op documents (per-dimension lists where it wants them)."""
        n, first = self.spatial, self.channels_first
        whole = [1, 1, *self.strides] if first else [1, *self.strides, 1]
        whole_d = [1, 1, *self.dilations] if first else [1, *self.dilations, 1]
        padding: Any = self.padding
        if not isinstance(padding, str):
            pairs = [list(p) for p in padding]
            padding = [[0, 0], [0, 0], *pairs] if first else [[0, 0], *pairs, [0, 0]]
        args: dict[str, Any] = {}
        if self.kind == "transpose":
            args["output_shape"] = list(self.out_shape or ())
        if self.op == "conv1d":
            args.update(stride=self.strides[0], padding=padding, dilations=self.dilations[0])
        elif self.op in ("conv2d", "conv3d"):
            args.update(strides=whole, padding=padding, dilations=whole_d)
        elif self.kind in ("depthwise", "separable"):
            args.update(strides=whole, padding=padding, dilations=list(self.dilations))
        else:  # convolution and the transposes: one stride per spatial dimension
            args.update(strides=list(self.strides), padding=padding)
            args["dilations"] = list(self.dilations)
        if first:
            args["data_format"] = _CHANNELS_FIRST[n]
        return args

    def operand_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each tensor operand, in call order."""
        shapes = [("x", self.x_shape), ("f", self.f_shape)]
        if self.p_shape is not None:
            shapes.append(("w", self.p_shape))
        return shapes

    def call(self) -> str:
        """The call as Python, its operands named ``x``, ``f`` (and ``w``)."""
        names = ", ".join(name for name, _ in self.operand_shapes())
        rest = ", ".join(f"{k}={_python(v)}" for k, v in self.arguments().items())
        return f"tf.nn.{self.op}({names}, {rest})"

    def operand_code(self, name: str, shape: tuple[int, ...], number: int) -> str:
        """The expression that builds one operand (exactly the sweep's values)."""
        draw = (
            f"tf.random.stateless_uniform({list(shape)}, [{self.seed}, {number}], 1, 4, tf.int32)"
        )
        return draw if self.dtype == "int32" else f"tf.cast({draw}, tf.{self.dtype})"

    def repro(self, comment: str = "") -> str:
        """One line of Python that makes this call on the sweep's very operands."""
        parts = ["import tensorflow as tf"]
        for number, (name, shape) in enumerate(self.operand_shapes()):
            parts.append(f"{name} = {self.operand_code(name, shape, number)}")
        parts.append(f"y = {self.call()}")
        line = "; ".join(parts)
        return f"{line}  # {comment}" if comment else line

    def to_json(self) -> dict[str, Any]:
        """The case as plain JSON values (``from_json`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        """The case ``to_json`` wrote."""
        fields = dict(data)
        for key in ("x_shape", "f_shape", "strides", "dilations", "out_shape", "p_shape"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        if not isinstance(fields["padding"], str):
            fields["padding"] = tuple(tuple(p) for p in fields["padding"])
        return cls(**fields)


def sample(seed: int, count: int | None = None, start: int = 0) -> Iterator[Case]:
    """Cases ``start, start + 1, ...`` of ``seed`` (``count`` of them; None: endless)."""
    index = start
    while count is None or index < start + count:
        yield draw(seed, index)
        index += 1


def draw(seed: int, index: int) -> Case:
    """Case ``index`` of ``seed``: the same on every machine and Python version."""
    rng = random.Random(f"convfix-sweep:{seed}:{index}")
    while True:
        case = _draw(rng, index)
        # The process-killing classes run alone (~0.1 s each when forking, ~3 s in a fresh
        # interpreter, against ~5 ms for a case in a batch): keep about one in fifty.
        if case is not None and (not case.risky or rng.random() < 0.25):
            return case


def _draw(rng: random.Random, index: int) -> Case | None:
    op = rng.choice(OPS)
    kind = KIND.get(op, "conv")
    n = SPATIAL.get(op, 2) if op != "convolution" else rng.choice((1, 2, 3))
    sizes = [rng.randint(1, 6) for _ in range(n)]
    kernel = [rng.randint(1, 4) for _ in range(n)]
    strides = _per_dim(rng, n, (1, 2, 3, 4))
    dilations = (1,) * n if rng.random() < 0.5 else _per_dim(rng, n, (1, 2))
    explicit = op in EXPLICIT and rng.random() < 0.25
    padding: Padding = (
        tuple((rng.randint(0, 2), rng.randint(0, 2)) for _ in range(n))
        if explicit
        else rng.choice(("SAME", "VALID"))
    )
    first = rng.random() < 0.25
    dtype = rng.choices(DTYPES, _DTYPE_WEIGHTS)[0]
    batch = 0 if rng.random() < 0.05 else rng.randint(1, 3)
    short = rng.choices((0, 1, 2), (94, 4, 2))[0]
    channels, f_shape, p_shape = _channels(rng, kind, kernel)
    out_shape = None
    if kind == "transpose":  # x is the forward convolution's output on out_shape
        out_channels = f_shape[-2]
        pads = [(0, 0)] * n if isinstance(padding, str) else list(padding)
        forward = [
            _output_size(*a, padding == "SAME")
            for a in zip(sizes, kernel, strides, dilations, pads)
        ]
        if min(forward) < 0:
            return None
        out_shape = _layout(batch, sizes, out_channels, first)
        x_shape = _layout(batch, forward, f_shape[-1], first)
    else:
        x_shape = _layout(batch, sizes, channels, first)
    if short:  # drop the batch, then the channels
        x_shape = x_shape[1:] if short == 1 else tuple(sizes)
        if out_shape is not None:
            out_shape = out_shape[1:] if short == 1 else tuple(sizes)
    return Case(
        index=index,
        op=op,
        x_shape=x_shape,
        f_shape=f_shape,
        strides=strides,
        dilations=dilations,
        padding=padding,
        channels_first=first,
        dtype=dtype,
        seed=rng.randrange(2**31),
        out_shape=out_shape,
        p_shape=p_shape,
    )


def _channels(
    rng: random.Random, kind: str, kernel: list[int]
) -> tuple[int, tuple[int, ...], tuple[int, ...] | None]:
    """Input channels, the filter's shape and separable's pointwise shape: one channel
    often (it has bugs of its own), grouped convolutions sometimes."""
    channels = rng.choice((1, 1, 2, 3, 4))
    if kind == "depthwise":
        return channels, (*kernel, channels, rng.randint(1, 3)), None
    if kind == "separable":
        multiplier = rng.randint(1, 2)
        pointwise = (1, 1, channels * multiplier, rng.randint(1, 3))
        return channels, (*kernel, channels, multiplier), pointwise
    if kind == "transpose":  # filter [k..., output channels, input channels]
        return channels, (*kernel, channels, rng.randint(1, 4)), None
    if rng.random() < 0.15:  # grouped: groups of filter-depth channels each
        groups, depth = rng.randint(2, 3), rng.randint(1, 2)
        return groups * depth, (*kernel, depth, groups * rng.randint(1, 2)), None
    return channels, (*kernel, channels, rng.randint(1, 4)), None


def _per_dim(rng: random.Random, n: int, values: tuple[int, ...]) -> tuple[int, ...]:
    if rng.random() < 0.5:  # the same in every dimension, as most calls are
        return (rng.choice(values),) * n
    return tuple(rng.choice(values) for _ in range(n))


def _layout(batch: int, sizes: list[int], channels: int, first: bool) -> tuple[int, ...]:
    return (batch, channels, *sizes) if first else (batch, *sizes, channels)


def _dilated(kernel: int, dilation: int) -> int:
    return (kernel - 1) * dilation + 1


def _output_size(
    size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int], same: bool
) -> int:
    """The forward convolution's output size in one dimension (negative: none)."""
    if same:
        return -(-size // stride)
    return (size + pads[0] + pads[1] - _dilated(kernel, dilation)) // stride + 1


def _python(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
