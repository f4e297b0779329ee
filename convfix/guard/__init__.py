"""The guard: calls TensorFlow would crash on or answer wrongly, found before dispatch.

``rules`` says which calls are unsafe on which build (pure functions of the call and the
build); ``inspection`` turns them into Problems before dispatch; ``graph_checks`` adds the
one run-time check a traced call needs where static shapes cannot decide; ``answers``
computes the results the guard can give without dispatching (an empty input's).
"""

from convfix.guard.inspection import inspect

__all__ = ["inspect"]
