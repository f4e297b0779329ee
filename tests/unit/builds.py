"""Builds for rule tests: the rules take a guard.build.Build, tests mostly vary oneDNN."""

from __future__ import annotations

from convfix.guard.build import Build, Version


def build(onednn: bool, tensorflow: Version = (2, 21)) -> Build:
    """TF 2.21 (the build measured most) with oneDNN on or off, unless told otherwise."""
    return Build(tensorflow, onednn)
