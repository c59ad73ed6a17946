"""`vidsr probe INPUT`: print the stream facts the engine will use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidsr.commands import add_command
from vidsr.media.info import MediaInfo, probe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "probe", "print the stream facts vidsr reads from a media file", run)
    parser.add_argument("input", type=Path, help="video or image file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def describe(info: MediaInfo) -> str:
    v = info.video
    rate = f"{float(v.frame_rate):.3f} fps" if v.frame_rate else "unknown rate"
    duration = f"{v.duration:.3f} s" if v.duration is not None else "unknown"
    count = str(v.frame_count) if v.frame_count else f"unknown (~{v.estimated_frames or '?'} estimated)"
    lines = [
        f"{info.path}  [{info.container}]",
        f"  video #{v.index}: {v.codec} {v.width}x{v.height} {v.pix_fmt} ({v.bit_depth}-bit), SAR {v.sar}, {rate}",
        f"    time base {v.time_base}, duration {duration}, frames {count}, rotation {v.rotation}"
        + (", interlaced" if v.interlaced else ""),
        f"    colour: {v.color.describe()}",
    ]
    if v.mastering_display or v.content_light:
        light = f"MaxCLL {v.content_light.max_cll}, MaxFALL {v.content_light.max_fall}" if v.content_light else ""
        lines.append("    HDR10: " + "; ".join(filter(None, [v.mastering_display and v.mastering_display.describe(),
                                                              light])))
    lines += [f"  {s.kind} #{s.index}: {s.codec}" + (f" [{s.language}]" if s.language else "") for s in info.others]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = probe(args.input)
    print(json.dumps(info.to_dict(), default=str, indent=2) if args.json else describe(info))
    return 0
