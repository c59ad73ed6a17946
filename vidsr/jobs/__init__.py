"""Jobs: what runs where. Files and folders of inputs (`batch`) and chunks spread over Ray workers
(`distributed`), on top of the media pipeline."""

from vidsr.errors import NumberRange

# A worker runs its model on one GPU: a share of one (two workers on a GPU: 0.5), never more than one
GPUS_PER_WORKER = NumberRange(0, 1, low_open=True)
