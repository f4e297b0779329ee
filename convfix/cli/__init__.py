"""The ``convfix`` command: ``run``, ``report``, ``doctor``, ``config`` and ``demo``.

Nothing on the path of ``import convfix.auto`` imports this package: a program pays for the
command line only when it is started through it. Each command is one module with two
functions, ``add_parser(subparsers)`` and ``main(args) -> exit code``; heavy imports stay
inside the functions that need them, so ``convfix report`` and ``convfix config`` never
import TensorFlow.
"""
