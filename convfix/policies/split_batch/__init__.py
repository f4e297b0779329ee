"""split_batch: a call out of memory, or over a byte budget, runs in chunks of its batch
(``policy``); ``chunks`` slices, runs and joins them."""

from convfix.policies.split_batch.policy import SplitBatchPolicy

__all__ = ["SplitBatchPolicy"]
