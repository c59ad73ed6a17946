"""One frame at a time through FFmpeg's filters (turning pictures upright, dropping side data)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import av
import av.filter


def filter_one(frame: av.VideoFrame, source: dict, filters: list[tuple[str, str | None]]) -> av.VideoFrame:
    """`frame` through FFmpeg's `filters` (name, arguments) in order; `source` describes the frames fed in, as
    PyAV's `Graph.add_buffer` takes it (a stream as `template`, or width, height, format and time_base)."""
    return filter_chain(source, filters)(frame)


def filter_chain(source: dict, filters: list[tuple[str, str | None]]) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """A configured graph of `filters` for one frame in, one frame out; see `filter_one`."""
    graph = av.filter.Graph()
    chain = [graph.add_buffer(**source), *(graph.add(name, args) for name, args in filters), graph.add("buffersink")]
    for upstream, downstream in itertools.pairwise(chain):
        upstream.link_to(downstream)
    graph.configure()

    def run(frame: av.VideoFrame) -> av.VideoFrame:
        graph.push(frame)
        return graph.pull()

    return run
