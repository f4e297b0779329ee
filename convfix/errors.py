"""The two exceptions convfix raises on purpose."""

from __future__ import annotations


class ConvFixError(ValueError):
    """A convolution call convfix refused: the message names the argument, its shape,
    what would be valid, and the TOML key whose policy would repair it.

    A ValueError so that code already catching TensorFlow's argument errors by
    ``except ValueError`` keeps working. Chained (``__cause__``) from TensorFlow's own
    error where there was one.

    Raised while a ``tf.function`` traces, it reaches the caller as itself, not as
    AutoGraph's ``StagingError``. ``callsite`` is the user's ``"path:line"`` (inside
    ``tf.function`` mapped back from AutoGraph's generated code, which the traceback
    shows), and the message's last line names it: ``Called from <path:line>``.
    """

    ag_pass_through = True  # AutoGraph re-raises it untouched (as TF's own UnliftableError)
    callsite: str | None = None


class ConfigError(ValueError):
    """Configuration that cannot be used: raised at start-up, never later.

    The message reads ``<file>: <key.path>: <what was expected>, got <what was found>``.
    Raised inside a ``tf.function`` (``convfix.override`` with a bad value), it reaches the
    caller as itself, not as AutoGraph's ``StagingError``.
    """

    ag_pass_through = True  # as ConvFixError's

    __module__ = "convfix"
