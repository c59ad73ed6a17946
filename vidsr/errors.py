"""User-facing errors: each one's message is a single readable line, shown without a traceback."""


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
