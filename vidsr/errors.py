"""User-facing errors: each one's message is a single readable line, shown without a traceback."""

import re

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
