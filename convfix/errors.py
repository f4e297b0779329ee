"""The two exceptions convfix raises on purpose."""

from __future__ import annotations


class ConvFixError(ValueError):
    """A convolution call convfix refused: the message names the argument, its shape,
    what would be valid, and the TOML key whose policy would repair it.

    A ValueError so that code already catching TensorFlow's argument errors by
    ``except ValueError`` keeps working. Chained (``__cause__``) from TensorFlow's own
    error where there was one.
    """


class ConfigError(ValueError):
    """Configuration that cannot be used: raised at start-up, never later.

    The message reads ``<file>: <key.path>: <what was expected>, got <what was found>``.
    """

    __module__ = "convfix"
