"""The data path of a call the fast check did not clear: bind -> guard -> policies ->
dispatch -> recovery -> events (``path``), TensorFlow's run-time failures (``recovery``)."""

from convfix.pipeline.path import Target, handle, recover

__all__ = ["Target", "handle", "recover"]
