"""Route every TensorFlow convolution in this process through convfix.

Add ``import convfix.auto`` as the first line of a program (before or after importing
TensorFlow). It reads the configuration (CONVFIX_CONFIG, ./convfix.toml,
[tool.convfix] in ./pyproject.toml, else built-in defaults), raises ConfigError at once if
it is wrong, and patches TensorFlow when it is imported. It never imports TensorFlow.
``CONVFIX_MODE=off`` in the environment turns everything off without a file.
"""

from convfix._bootstrap import activate

activate()
