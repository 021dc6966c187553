"""DeepSpeed ops that training never calls, kept from being built.

On a CPU accelerator, DeepSpeed's communication backend JIT-compiles its shared-memory
all-reduce extension (``deepspeed_shm_comm``) when it starts. Only ``inference_all_reduce``
calls that op (DeepSpeed inference's tensor parallelism). Training all-reduces through
``torch.distributed`` (gloo). On the first run in a new environment the build took 40 s
(65 CPU-seconds) on 2 cores here, and 77 s while other work ran. Every process that
initialises DeepSpeed waited for it. An op DeepSpeed holds incompatible is not built, and the
backend falls back to ``torch.distributed``. ``deepspeed.ops.__compatible_ops__`` is one dict
per process, and DeepSpeed keeps edits to it.
"""

from __future__ import annotations

UNUSED_OPS = ("deepspeed_shm_comm",)


def skip_unused_deepspeed_ops() -> None:
    """Call before ``deepspeed.initialize`` in a process that trains (not needed twice)."""
    import deepspeed.ops

    for name in UNUSED_OPS:
        deepspeed.ops.__compatible_ops__[name] = False
