"""Reaching Ray: a session started here, or a cluster someone started with `ray start --head`.

A cluster's address is checked before Ray is asked to join it, each check bounded in seconds: something must
answer there (TCP), it must speak gRPC as Ray does (an HTTP/2 handshake; a web server on that port would keep
Ray retrying for minutes), and, for a cluster's GCS address, it must take this process's token. Ray 2.59+ turns
token authentication on by default: a cluster started with `ray start --head` wants its token, which `ray
get-auth-token` prints on the head. It is passed as `--cluster-token` or in Ray's own variables (RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH); see docs/SCALING.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vidsr.errors import InputError

CONNECT_TIMEOUT = 3.0  # seconds for each check of a cluster's address before saying what answers there
TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # where Ray reads a token; RAY_AUTH_MODE turns it on
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS
_SETTINGS = 4  # the frame type a gRPC server answers the preface with
_TOKEN_HELP = ("`ray get-auth-token` on the head prints it; pass it as --cluster-token TOKEN or in RAY_AUTH_TOKEN "
               "(docs/SCALING.md)")


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--workers and --cluster need Ray: pip install 'vidsr[ray]'") from None
    return ray


def connect(cluster: str | None = None, token: str | None = None) -> Any:
    """Ray, started here with this machine's CPUs and GPUs, or connected to `cluster` ("auto", "ray://host:port"
    or "host:port") with `token` where the cluster wants one; a session this process already has is used as it
    is. Ray's own messages stay off stdout: its log at errors only, its workers' output not sent here."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if cluster is None:
        ray.init(include_dashboard=False, **quiet)
        return ray
    _use_token(token)
    if cluster != "auto":
        host, port = _address(cluster)
        if cluster.startswith("ray://"):
            _check_client_installed()
        _check_speaks_grpc(cluster, host, port)
        if cluster.startswith("ray://"):
            _check_client_token(cluster, f"{host}:{port}")
        else:
            _check_token(ray, cluster, f"{host}:{port}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's client warns of a timeout as well as raising it
            ray.init(address=cluster, **quiet)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # Ray's reason may follow a line break
        raise InputError(f"cannot connect to the Ray cluster at {cluster} ({reason})") from None
    return ray


def _address(cluster: str) -> tuple[str, int]:
    parsed = urlparse(cluster if "://" in cluster else f"ray://{cluster}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or not port or parsed.scheme != "ray":
        raise InputError(f"--cluster {cluster}: expected auto, ray://HOST:PORT or HOST:PORT")
    return parsed.hostname, port


def _check_speaks_grpc(cluster: str, host: str, port: int) -> None:
    """Something answers at host:port with an HTTP/2 SETTINGS frame, as Ray's gRPC servers do: a refused or
    silent port, or another protocol (an HTTP/1 server), is said in one line within seconds."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as conn:
            conn.sendall(_HTTP2_PREFACE)
            answer = b""
            while len(answer) < 9 and (data := conn.recv(9 - len(answer))):
                answer += data
    except OSError as exc:
        reason = exc.strerror or str(exc) or "timed out"
        raise InputError(f"no Ray cluster answers at {cluster} ({reason.lower()})") from None
    if len(answer) < 9 or answer[3] != _SETTINGS:
        raise InputError(f"no Ray cluster answers at {cluster}: something else listens there (it does not speak "
                         f"gRPC); a cluster's address is the head's HOST:6379, or ray://HOST:10001")


def _check_client_installed() -> None:
    try:
        import grpc  # noqa: F401 - what ray[client] adds to Ray
    except ImportError:
        raise InputError("--cluster ray://...: Ray's client needs grpcio: pip install 'vidsr[ray]' (it installs "
                         "ray[client])") from None


def _use_token(token: str | None) -> None:
    """Ray sends a token only in token mode, which it does not turn on by itself for an address it is given:
    with a token (given here, or in Ray's variables) it is turned on for this process and those it starts."""
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
    if any(os.environ.get(name) for name in TOKEN_VARIABLES) and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        with contextlib.suppress(ImportError):  # (another Ray: it reads the variables when it starts)
            from ray._raylet import Config

            Config.initialize("")  # Ray read RAY_AUTH_MODE when it was imported: again, now


def _check_token(ray: Any, cluster: str, gcs: str) -> None:
    """Ask the cluster's GCS for its id, which a cluster with token authentication answers only with the right
    token: Ray itself would retry for 20 s, printing the refusal each time. Ray's C++ logger writes its own
    line on stderr for the refusal, which is held back here; the one line said instead names the fix."""
    try:
        from ray._raylet import GcsClient  # no public call checks a token
    except ImportError:
        return  # another Ray: its ray.init says what is wrong, if less quickly
    try:
        with _stderr_held():
            GcsClient(address=gcs).cluster_id  # noqa: B018 - fetching it is the check
    except ray.exceptions.AuthenticationError:
        raise _token_error(cluster) from None
    except Exception:  # noqa: BLE001 - anything else: ray.init below meets it too and says it in one line
        pass


def _check_client_token(cluster: str, address: str) -> None:
    """The same for Ray's client server (ray://), which Ray's client would wait on for 30 s and then call a
    timeout: one call with the token, as Ray's client sends it, answered UNAUTHENTICATED without the right one."""
    import grpc

    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token and os.environ.get("RAY_AUTH_TOKEN_PATH"):
        with contextlib.suppress(OSError):
            token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary("/ray.rpc.RayletDriver/ClusterInfo")(
                b"", timeout=CONNECT_TIMEOUT, metadata=[("authorization", f"Bearer {token}")] if token else None)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise _token_error(cluster) from None


def _token_error(cluster: str) -> InputError:
    given = "refused the token given" if any(os.environ.get(n) for n in TOKEN_VARIABLES) else "wants its token"
    return InputError(f"the Ray cluster at {cluster} {given}: {_TOKEN_HELP}")


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside (C++ code writes there, not through sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
