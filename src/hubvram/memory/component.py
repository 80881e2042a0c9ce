"""The unit of every estimate: one memory term with its formula and source. Pure."""

from __future__ import annotations

from dataclasses import dataclass

#: The moments of a training step (step >= 2, when optimizer states exist) at which memory is summed.
FORWARD = "forward"                 # end of forward: the loss is being computed (logits transient)
FWD_LAYER = "forward.layer"         # inside the last decoder layer's forward (its largest temporary)
BWD_START = "backward.start"        # start of backward: loss gradients (12 B x vocab per token)
BWD_HEAD = "backward.head"          # the output layer's backward: logits gradient + head weight gradient
BWD_TOP = "backward.top"            # the first decoder layer processed in backward (the last layer)
BWD_BOTTOM = "backward.bottom"      # the last decoder layer processed (layer 0), later gradients accumulated
BWD_END = "backward.end"            # end of backward: every gradient, plus the embedding's backward
OPTIMIZER = "optimizer"             # optimizer.step(): weights + gradients + states + step temporaries
PHASES = (FWD_LAYER, FORWARD, BWD_START, BWD_HEAD, BWD_TOP, BWD_BOTTOM, BWD_END, OPTIMIZER)
ALL = PHASES


@dataclass(frozen=True)
class Component:
    """One memory term.

    ``phases``: the phases in which these bytes are alive (summed into ``Estimate.phase_bytes``).
    ``formula``: symbolic; ``substituted``: the same with this model's and setup's numbers;
    ``source``: paper section / library file and version / oracle measurement it comes from.
    ``evictable``: memory outside PyTorch's caching allocator that the driver may page out to host RAM
    (bitsandbytes paged optimizer states): counted in the device total, not in allocated/reserved.
    ``category``: what a sharding strategy does with it (hubvram.parallel.category); None = by its name.
    """

    name: str
    bytes: int
    phases: tuple[str, ...]
    formula: str
    substituted: str
    source: str
    evictable: bool = False
    category: str | None = None

    def alive(self, phase: str) -> bool:
        return phase in self.phases
