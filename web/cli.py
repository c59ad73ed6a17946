"""Command-line options of the demo, shared by `vidsr web` and `python -m web`."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from vidsr.errors import VidsrError
from web.limits import Limits, parse_resolution


def parse_auth(text: str) -> tuple[str, str]:
    user, colon, password = text.partition(":")
    if not (user and colon and password):
        raise argparse.ArgumentTypeError("--auth takes user:password")
    return user, password


def resolution_or_none(text: str) -> tuple[int, int] | None:
    if text.lower() in ("0", "none"):
        return None
    try:
        return parse_resolution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for the network)")
    server.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    server.add_argument("--auth", type=parse_auth, metavar="USER:PASSWORD", help="ask for this login")
    server.add_argument("--share", action="store_true", help="also open a public *.gradio.live link (off by default)")
    server.add_argument("--device", default="auto", help="torch device for the models (default: %(default)s)")
    server.add_argument("--concurrency", type=int, default=1,
                        help="model runs at once; more requests wait in the queue (default: %(default)s)")
    server.add_argument("--queue-size", type=int, default=20, help="most requests waiting (default: %(default)s)")
    limits = parser.add_argument_group("limits (0 = none)")
    limits.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb,
                        help="largest upload in MB (default: %(default)s)")
    limits.add_argument("--max-duration", type=float, default=defaults.max_duration_s, metavar="SECONDS",
                        help="longest video (default: %(default)s)")
    limits.add_argument("--max-resolution", type=resolution_or_none, default=defaults.max_resolution,
                        metavar="WxH", help="largest input picture, either orientation (default: 1920x1080)")


def run(args: argparse.Namespace) -> int:
    from web.sessions import private_temp_folder

    temp = private_temp_folder()  # before gradio is imported: it reads GRADIO_TEMP_DIR then
    from web.app import WebSettings, launch  # gradio is slow to import: only when serving

    settings = WebSettings(
        limits=Limits(max_upload_mb=args.max_upload_mb or None, max_duration_s=args.max_duration or None,
                      max_resolution=args.max_resolution),
        device=args.device, concurrency=args.concurrency, queue_size=args.queue_size)
    if (args.share or not _is_loopback(args.host)) and args.auth is None:
        print("vidsr web: warning: reachable from other machines without --auth", file=sys.stderr)
    try:
        launch(settings, temp, host=args.host, port=args.port, auth=args.auth, share=args.share)
    except OSError as exc:  # Gradio's message talks about launch() arguments; say it in CLI terms
        raise VidsrError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or 'in use or not allowed'}); "
                         "choose another --port or --host") from None
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
