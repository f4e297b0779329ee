"""``[gpu] memory_growth``: the standard cure for "cuDNN failed to initialize".

By default TensorFlow reserves nearly all of a GPU's memory when it first uses it, which
can leave cuDNN no room for its handle or workspace (tf-facts.md; TensorFlow issues
#24496, #24828). Memory growth makes TensorFlow take memory as needed instead. It must be
set before TensorFlow initialises its devices; convfix sets it when it patches TensorFlow
(at ``import tensorflow`` after ``import convfix.auto``), which is before any tensor
exists in most programs. If the devices were initialised already, it says so and what to
do instead: TensorFlow would refuse with RuntimeError.
"""

from __future__ import annotations

from typing import Any

from convfix import events

GPU_MEMORY_GROWTH = "convfix.gpu_memory_growth"

TOO_LATE = (
    "TensorFlow had already initialised its GPUs, so memory growth could not be turned on: "
    "import convfix.auto before anything creates a tensor, or set "
    "TF_FORCE_GPU_ALLOW_GROWTH=true in the environment before the program starts"
)


def apply_memory_growth(tf: Any) -> None:
    """Turn on memory growth for every GPU TensorFlow sees; report what happened.

    Never raises: it runs inside the post-import hook of ``import tensorflow``.
    """
    try:
        gpus = tf.config.list_physical_devices("GPU")
    except Exception as error:
        events.emit(GPU_MEMORY_GROWTH, level="warning", applied=[], error=str(error)[:200])
        return
    applied: list[str] = []
    late: list[str] = []
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            applied.append(gpu.name)
        except RuntimeError:  # "Physical devices cannot be modified after being initialized"
            if tf.config.experimental.get_memory_growth(gpu):
                applied.append(gpu.name)  # on already, e.g. by TF_FORCE_GPU_ALLOW_GROWTH
            else:
                late.append(gpu.name)
        except Exception as error:
            events.emit(GPU_MEMORY_GROWTH, level="warning", device=gpu.name, error=str(error)[:200])
    if late:
        events.emit(GPU_MEMORY_GROWTH, level="warning", applied=applied, too_late=late,
                    message=TOO_LATE)  # fmt: skip
    else:
        events.emit(GPU_MEMORY_GROWTH, applied=applied, gpus=len(gpus))
