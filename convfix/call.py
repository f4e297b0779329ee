"""The bound call and the value types every stage shares.

``Call``: one convolution's arguments, as the user gave them, by role. ``Problem``: one
thing wrong with a call (the guard's and the policies' finding). ``Repair``: what a policy
did about one. ``Binder``: turns a function's positional and keyword arguments into a Call.

Binding happens only on the replay and full path (see integrations/entry.py): a call that the
cheap check proves healthy is never bound.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from convfix.geometry import Shape
from convfix.ops import OpSpec, default_data_format


@dataclass(frozen=True, slots=True)
class Call:
    """One convolution call: the op, its arguments by name, and their roles."""

    spec: OpSpec
    arguments: Mapping[str, Any]  # every parameter, defaults filled in
    input_name: str
    filter_name: str
    graph: bool = False  # traced inside tf.function (no eager values)
    layer: str | None = None  # the Keras layer making the call, where there is one
    # Where the call will run, as far as is known when it is made (guard/placement.py):
    # "cpu" or "gpu" (the device scope's kind), "xla" (compiled by XLA), None (no scope).
    placement: str | None = None

    @property
    def input(self) -> Any:
        return self.arguments[self.input_name]

    @property
    def filter(self) -> Any:
        return self.arguments[self.filter_name]

    @property
    def padding(self) -> Any:
        return self.arguments.get(self.spec.padding_param)

    @property
    def strides(self) -> Any:
        param = self.spec.strides_param
        return self.arguments.get(param) if param else None

    @property
    def dilations(self) -> Any:
        for name in self.spec.dilations_params:
            value = self.arguments.get(name)
            if value is not None:
                return value
        return None

    @property
    def data_format(self) -> str | None:
        value = self.arguments.get(self.spec.data_format_param)
        return value if isinstance(value, str) else None

    @property
    def pointwise_filter(self) -> Any:
        param = self.spec.pointwise_param
        return self.arguments.get(param) if param else None

    def channels_last(self) -> bool:
        fmt = self.data_format
        return fmt is None or not fmt.upper().startswith("NC")

    def format_name(self, spatial: int) -> str:
        return self.data_format or default_data_format(spatial)

    def replace(self, **arguments: Any) -> Call:
        """A copy with some arguments changed, by parameter name ("input" and "filter"
        also name the roles, whatever the op calls them)."""
        roles = {"input": self.input_name, "filter": self.filter_name}
        merged = dict(self.arguments)
        for key, value in arguments.items():
            merged[roles.get(key, key)] = value
        return Call(
            self.spec, merged, self.input_name, self.filter_name, self.graph, self.layer,
            self.placement,
        )  # fmt: skip


def spatial_rank(call: Call, filter_shape: Shape | None, input_shape: Shape | None) -> int | None:
    """N for an N-d convolution: from the op, else from the filter, else the input."""
    if call.spec.spatial is not None:
        return call.spec.spatial
    if filter_shape is not None:
        return len(filter_shape) - 2
    if input_shape is not None:
        return len(input_shape) - 2
    return None


# What TensorFlow itself would do with the unrepaired call:
#   "abort"   - the process dies (SIGABRT in a oneDNN kernel)
#   "garbage" - a result of the wrong shape, silently
#   "answered" - TensorFlow answers by itself: its own error, or a correct result
#   "unclear" - TensorFlow raises, but its error does not say what is wrong (oneDNN's
#               "could not create a primitive descriptor"): convfix refuses it in its words
Hazard = Literal["abort", "garbage", "answered", "unclear"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a call, found before dispatch."""

    reason: str  # stable snake_case code, e.g. "dtype_mismatch"
    owner: str  # the policy that can repair it, or "guard"
    hazard: Hazard
    message: str  # names the argument, its shape or dtype, and what would be valid
    before: Mapping[str, Any] = field(default_factory=dict)
    # Strict mode may run the call to chain TensorFlow's own error: not one over a memory
    # budget, which is what the budget is there to prevent.
    probe: bool = True

    @property
    def unsafe(self) -> bool:
        """TensorFlow would crash, answer wrongly, or raise an error that does not say why:
        never dispatch it unrepaired (the fast checks may still let TensorFlow raise on an
        "unclear" one: recovery then refuses it in convfix's words)."""
        return self.hazard != "answered"

    @property
    def dangerous(self) -> bool:
        """TensorFlow would crash or answer wrongly: where convfix's own bug stops a repair,
        the call as made is no safe fallback (an "unclear" one only raises)."""
        return self.hazard in ("abort", "garbage")


PostProcess = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Repair:
    """What a policy did: the new call, how to finish the result, and what to log."""

    call: Call
    action: str
    after: Mapping[str, Any]
    finish: PostProcess | None = None  # applied to the result (e.g. cast back, squeeze)
    # The same repair as argument rewrites (parameter name -> new value from the old one),
    # when it is exactly that: a remembered plan then replays it without binding the call.
    rewrites: Mapping[str, Callable[[Any], Any]] | None = None
    # Runs the repaired call in place of one TensorFlow call (split_batch's chunks): given
    # the function that sends one call to TensorFlow, returns the result.
    run: Callable[[Callable[[Call], Any]], Any] | None = None


_MISSING = object()


class Binder:
    """Binds positional and keyword arguments of one function to a Call.

    The common case (plain positional-or-keyword parameters, every required one given)
    is a dict merge; anything else goes through inspect.Signature.bind, which also raises
    the TypeError Python would for a bad call.
    """

    __slots__ = ("_defaults", "_names", "_signature", "spec")

    def __init__(self, spec: OpSpec, function: Callable[..., Any]) -> None:
        self.spec = spec
        self._signature = inspect.signature(function)
        params = self._signature.parameters.values()
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self._names = tuple(p.name for p in params) if plain else ()
        self._defaults = {p.name: _MISSING if p.default is p.empty else p.default for p in params}

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Call:
        arguments = self._quick(args, kwargs)
        if arguments is None:
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        input_name = _first_given(arguments, self.spec.input_params)
        filter_name = _first_given(arguments, self.spec.filter_params)
        return Call(self.spec, arguments, input_name, filter_name)

    def _quick(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self._names or len(args) > len(self._names):
            return None
        arguments = dict(self._defaults)
        arguments.update(zip(self._names, args))
        for name in kwargs:
            if name not in arguments or name in self._names[: len(args)]:
                return None  # unknown or duplicate: let Signature.bind raise
        arguments.update(kwargs)
        if any(value is _MISSING for value in arguments.values()):
            return None
        return arguments

    @property
    def can_rewrite(self) -> bool:
        """Whether :meth:`rewrite` understands this signature (plain parameters only)."""
        return bool(self._names)

    def rewrite(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        rewrites: Mapping[str, Callable[[Any], Any]],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments with each named parameter replaced by ``rewrite(old value)``,
        positional or keyword as the user passed it (defaults filled in where absent)."""
        positional, keywords = list(args), dict(kwargs)
        for name, rewrite in rewrites.items():
            at = self._names.index(name) if name in self._names else -1
            if 0 <= at < len(positional):
                positional[at] = rewrite(positional[at])
            else:
                default = self._defaults.get(name, _MISSING)
                keywords[name] = rewrite(
                    keywords.get(name, None if default is _MISSING else default)
                )
        return tuple(positional), keywords

    def dispatch(self, function: Callable[..., Any], call: Call) -> Any:
        """Call ``function`` with the call's arguments, by keyword."""
        return function(**call.arguments)


def _first_given(arguments: Mapping[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        if arguments.get(name) is not None:
            return name
    return names[0]
