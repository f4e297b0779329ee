"""Shared test set-up. Runs before any test module imports TensorFlow."""

import os

# TF 2.21 turns its oneDNN kernels on by default on Intel x86-64 but off on AMD; the aborts
# and wrong-shaped results convfix guards against happen with oneDNN on, so the suite runs
# that build everywhere (tests that need it off set it in their own subprocess).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
