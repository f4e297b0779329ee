"""convfix: TensorFlow convolutions that stop failing for avoidable reasons.

Public API: ``patch()``, ``unpatch()``, ``override()``, ``load_config()``,
``ConvFixError``, ``ConfigError``. ``import convfix.auto`` is ``patch()`` at start-up.
"""

from __future__ import annotations

import os

from convfix.config import Config, load_config
from convfix.errors import ConfigError, ConvFixError
from convfix.runtime import override

__all__ = [
    "Config",
    "ConfigError",
    "ConvFixError",
    "load_config",
    "override",
    "patch",
    "unpatch",
]
__version__ = "0.2.0"


def patch(config: str | os.PathLike[str] | None = None) -> Config:
    """Activate convfix: load the configuration (``config`` is a TOML file path; None
    discovers it) and wrap TensorFlow's convolutions now or when TensorFlow is imported.

    Idempotent: calling it again (or after ``import convfix.auto``) reloads the
    configuration and wraps nothing twice. Raises ConfigError for a bad configuration,
    leaving the previous one in force.
    """
    from convfix._bootstrap import activate

    return activate(config)


def unpatch() -> None:
    """Restore TensorFlow's original functions exactly and stop intervening."""
    from convfix._bootstrap import deactivate

    deactivate()
