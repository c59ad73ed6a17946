"""Compute: running a model on frames (the upscaler, the batch runner, tiling, conv-activation fusion, the heap
tweak). Knows nothing of containers: it takes and gives planes described by `vidsr.formats`."""
