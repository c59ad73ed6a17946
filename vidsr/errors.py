"""User-facing errors: each one's message is a single readable line, shown without a traceback; and the ranges
numeric settings are checked against, by the CLI's options and the API alike."""

import math
import re
from dataclasses import dataclass
from typing import Any

# Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: a file name may hold any of them
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with its control characters written as escapes (`\\n`, `\\x1b`), so that a file name holding a
    newline cannot split a message, nor an escape sequence drive the terminal. Every message vidsr prints
    (errors and notices) goes through it at the end, whatever put the name in."""
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)


class VidsrError(Exception):
    """Base of every error vidsr reports to a user (CLI exit status 1, one line on stderr)."""


class InputError(VidsrError):
    """The input path, file or stream cannot be used (missing, not media, no video stream, bad pix_fmt)."""


class OutputError(VidsrError):
    """The output path cannot be written (exists without overwrite, missing directory, same as input)."""


class ModelError(VidsrError):
    """A model name, file or state dict cannot be resolved to an architecture."""


class DecodeError(VidsrError):
    """The input failed to decode part way through (corrupt or truncated file)."""


class EncodeError(VidsrError):
    """The encoder or muxer refused the output (unknown codec, bad option, unsupported pix_fmt)."""


class Cancelled(VidsrError):
    """The job was cancelled (Ctrl-C or a cancel event); partial output has been removed."""


@dataclass(frozen=True)
class NumberRange:
    """Finite numbers (whole ones with `whole`) from `low` to `high`, either end left out with its `_open`."""

    low: float | None = None
    high: float | None = None
    whole: bool = False
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float if not self.whole else int):
            return False
        return (math.isfinite(value)
                and (self.low is None or (value > self.low if self.low_open else value >= self.low))
                and (self.high is None or (value < self.high if self.high_open else value <= self.high)))

    def check(self, name: str, value: Any) -> Any:
        """`value`, or a VidsrError naming `name` when it is out of the range."""
        if not self.holds(value):
            raise VidsrError(f"{name} must be {self}, got {value!r}")
        return value

    def __str__(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if not (self.low_open or self.high_open or self.low is None or self.high is None):
            return f"{kind} from {self.low:g} to {self.high:g}"
        ends = [f"{'above' if self.low_open else 'at least'} {self.low:g}" if self.low is not None else "",
                f"{'below' if self.high_open else 'at most'} {self.high:g}" if self.high is not None else ""]
        bounds = " and ".join(filter(None, ends))
        return f"{kind} {'of ' if bounds.startswith('at ') else ''}{bounds}".strip()


POSITIVE = NumberRange(0, low_open=True)
NON_NEGATIVE = NumberRange(0)
POSITIVE_WHOLE = NumberRange(1, whole=True)
NON_NEGATIVE_WHOLE = NumberRange(0, whole=True)
FRACTION = NumberRange(0, 1)
