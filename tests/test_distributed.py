"""Chunked jobs on Ray: a local Ray with 2 CPUs, started once for the module and always shut down; and a real
cluster started with `ray start --head` on loopback, with token authentication, as users start theirs."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_chunks import frames_of, with_chapter_and_font
from test_reuse import changed, picture, write_planes

import vidsr
from vidsr.errors import InputError, VidsrError
from vidsr.jobs.batch import upscale_path
from vidsr.jobs.distributed import upscale_files, worker_count

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def vidsr_cli(*args: str, prelude: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = f"{prelude}\nimport sys\nfrom vidsr.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env or ENV, capture_output=True, text=True,
                          timeout=120)


def free_port() -> int:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_ray_workers_say_how_to_get_it(make_clip, random_espcn):
    src = make_clip("in.mp4", width=64, height=48, frames=4)
    result = vidsr_cli("upscale", str(src), "-m", str(random_espcn), "--workers", "2",
                       prelude="import sys; sys.modules['ray'] = None  # as if not installed")
    assert result.returncode == 1
    assert result.stderr.strip() == "vidsr: error: --workers and --cluster need Ray: pip install 'vidsr[ray]'"


def test_cluster_where_nothing_listens_fails_in_one_line_quickly(make_clip, random_espcn):
    port = free_port()
    src = make_clip("in.mp4", width=64, height=48, frames=4)
    start = time.monotonic()
    result = vidsr_cli("upscale", str(src), "-m", str(random_espcn), "--cluster", f"ray://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"vidsr: error: no Ray cluster answers at ray://127.0.0.1:{port} "
                                     "(connection refused)")
    assert time.monotonic() - start < 60  # Python, torch and Ray's imports included; no connection retries
    assert not any(src.parent.glob(".*.vidsr"))


def test_cluster_where_a_web_server_listens_fails_in_one_line_within_seconds(make_clip, random_espcn):
    """Ray would retry for minutes against a server that answers in another protocol."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    src = make_clip("in.mp4", width=64, height=48, frames=4)
    try:
        start = time.monotonic()
        result = vidsr_cli("upscale", str(src), "-m", str(random_espcn), "--cluster", f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert result.stderr.strip() == (f"vidsr: error: no Ray cluster answers at 127.0.0.1:{server.server_port}: "
                                     "something else listens there (it does not speak gRPC); a cluster's address is "
                                     "the head's HOST:6379, or ray://HOST:10001")
    assert time.monotonic() - start < 60  # Python, torch and Ray's imports included; no connection retries
    assert not any(src.parent.glob(".*.vidsr"))


def test_ray_client_addresses_without_ray_client_installed_say_which_extra(make_clip, random_espcn):
    src = make_clip("in.mp4", width=64, height=48, frames=4)
    result = vidsr_cli("upscale", str(src), "-m", str(random_espcn), "--cluster", f"ray://127.0.0.1:{free_port()}",
                       prelude="import sys; sys.modules['grpc'] = None  # as if ray[client] were not installed")
    assert result.returncode == 1
    assert result.stderr.strip() == ("vidsr: error: --cluster ray://...: Ray's client needs grpcio: pip install "
                                     "'vidsr[ray]' (it installs ray[client])")


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` on loopback with token authentication (Ray 2.59+'s default for a head that has a
    token), in a session of its own; stopped by signalling that session only: `ray stop` would also stop every
    other Ray on this machine. Yields (GCS port, client port, token, the head's log folder)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vidsr[ray]')")
    temp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths live under it
    port, client_port, token = free_port(), free_port(), secrets.token_hex(16)
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "HOME": str(temp)}  # ~/.ray left alone
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
         "--ray-client-server-port", str(client_port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp / "t")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not all(_listening(p) for p in (port, client_port)):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start --head did not come up within 90 s")
            time.sleep(0.5)
        yield port, client_port, token, temp / "t" / "session_latest" / "logs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=10)  # the head drains for up to 30 s on SIGTERM: not worth waiting for here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def _client_server_logs(folder: Path) -> str:
    """The ends of the head's Ray client server logs: why a ray:// connection failed, in the failure message."""
    return "".join(f"\n--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                   for log in sorted(folder.glob("ray_client_server*.err")))


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.mark.slow
def test_a_cluster_started_with_ray_start_is_joined_with_its_token(ray_head, make_clip, random_espcn, tmp_path):
    port, client_port, token, logs = ray_head
    src = make_clip("in.mkv", width=64, height=48, frames=6, codec="ffv1", options=())
    env = {k: v for k, v in ENV.items() if not k.startswith("RAY_")}
    args = ["upscale", str(src), "-m", str(random_espcn), "-c", "ffv1", "--cluster"]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"):
        refused = vidsr_cli(*args, address, env=env)
        assert refused.returncode == 1 and refused.stderr.strip() == (
            f"vidsr: error: the Ray cluster at {address} wants its token: `ray get-auth-token` on the head prints "
            "it; pass it as --cluster-token TOKEN or in RAY_AUTH_TOKEN (docs/SCALING.md)")
    for address, out, how in ((f"127.0.0.1:{port}", tmp_path / "gcs.mkv", {"RAY_AUTH_TOKEN": token}),
                              (f"ray://127.0.0.1:{client_port}", tmp_path / "client.mkv", {})):
        token_args = [] if how else ["--cluster-token", token]
        joined = vidsr_cli(*args, address, *token_args, "-o", str(out), env={**env, **how})
        assert joined.returncode == 0, joined.stderr + _client_server_logs(logs)
        assert joined.stdout == f"{out}\n"  # nothing of Ray's beside the output path
        assert "Traceback" not in joined.stderr and len(frames_of(out)) == 6


def test_a_file_that_cannot_be_planned_leaves_no_work_folder_of_the_others(make_clip, random_espcn, tmp_path):
    good = make_clip("good.mp4", width=64, height=48, frames=4)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError):
        upscale_files([(good, tmp_path / "good_x2.mp4"), (bad, tmp_path / "bad_x2.mp4")],
                      vidsr.Upscaler(random_espcn, device="cpu"), workers=1)
    assert not any(tmp_path.glob(".*.vidsr"))


@pytest.fixture(scope="module")
def ray_session():
    """Ray with 2 CPUs, no dashboard and a small object store; its own start-up timeouts bound the wait."""
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    except Exception as exc:
        ray.shutdown()
        pytest.fail(f"Ray could not start here: {exc}")
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_pids() -> list[int]:
    """Processes of live ChunkWorker actors (Ray names them in their process title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::ChunkWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def vfr_mkv(make_clip, tmp_path: Path) -> Path:
    clip = make_clip("plain.mkv", width=64, height=48, frames=30, rate=Fraction(6), vfr=True, audio=True,
                     subtitles=True, codec="ffv1", pix_fmt="yuv420p10le", options=(("g", "3"),))
    return with_chapter_and_font(clip, tmp_path / "in.mkv")


def assert_same_video(a: Path, b: Path) -> None:
    frames_a, frames_b = frames_of(a), frames_of(b)
    assert [t for t, _ in frames_a] == [t for t, _ in frames_b]
    for (_, x), (_, y) in zip(frames_a, frames_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_two_workers_one_killed_still_complete_equal_to_single_run(ray_session, vfr_mkv, random_espcn, tmp_path,
                                                                      caplog, capfd):
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pids = worker_pids()
            if len(pids) == 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    single = vidsr.upscale_video(vfr_mkv, tmp_path / "single.mkv", model=random_espcn, encoder="ffv1")
    # A worker killed between its chunks (or after its last) dies unnoticed: nothing to retry. Such a run still
    # has to give the same video, and another attempt kills one mid-chunk.
    for attempt in range(3):
        caplog.clear()
        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        out = upscale_path(vfr_mkv, tmp_path / f"ray{attempt}.mkv", model=random_espcn, device="cpu",
                           encoder="ffv1", chunk_seconds=1, workers=2)[0]
        killer.join(timeout=5)
        assert killed, "no worker was killed: the test did not test a failure"
        assert_same_video(out, single)
        assert frames_of(out) and not any(tmp_path.glob(".*.vidsr"))
        if "the worker died" in caplog.text:
            break
    assert "the worker died" in caplog.text and "retrying on a new worker" in caplog.text
    assert capfd.readouterr().out == ""  # Ray's own report of the death (a paragraph) stays off stdout


def test_folder_runs_its_files_on_two_workers_at_once(ray_session, make_clip, random_espcn, tmp_path, caplog):
    caplog.set_level(logging.INFO, "vidsr")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, frames in (("a.mkv", 12), ("b.mkv", 18)):
        make_clip(f"in/{name}", width=64, height=48, frames=frames, codec="ffv1", options=(), audio=True)
    # --shared-path: the workers read the inputs themselves (the other test ships packets)
    outs = upscale_path(folder, tmp_path / "out", model=random_espcn, device="cpu", encoder="ffv1", workers=2,
                        shared_path=True)
    assert sorted(p.name for p in outs) == ["a.mkv", "b.mkv"]
    workers = {m.split("done on worker ")[1] for m in caplog.messages if "done on worker" in m}
    assert len(workers) == 2  # one file each, side by side
    for out in outs:
        single = vidsr.upscale_video(folder / out.name, tmp_path / f"single_{out.name}", model=random_espcn,
                                     encoder="ffv1")
        assert_same_video(out, single)


def test_a_folder_on_workers_goes_on_past_files_that_fail(ray_session, make_clip, random_espcn, tmp_path, caplog):
    """As without Ray: a file that cannot be planned and one whose chunk fails on a worker are reported, the
    others are done, and no work folder is left of the failed ones."""
    from test_robustness import h264_mp4_damaged

    folder = tmp_path / "in"
    folder.mkdir()
    make_clip("in/a.mkv", width=64, height=48, frames=8, codec="ffv1", options=())
    h264_mp4_damaged(folder / "b.mp4", range(9, 10), keep_lengths=True)  # decodes wrong in its second GOP
    (folder / "c.mkv").write_text("not a video")
    with pytest.raises(VidsrError) as failure:
        upscale_path(folder, tmp_path / "out", model=random_espcn, device="cpu", encoder="ffv1", workers=1)
    assert str(failure.value) == f"2 of 3 files failed (c.mkv, b.mp4); the others are in {tmp_path / 'out'}"
    assert "c.mkv: not a readable media file" in caplog.text and "b.mp4: decode error" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mkv"]  # no work folder, no partial file
    assert_same_video(tmp_path / "out" / "a.mkv", vidsr.upscale_video(folder / "a.mkv", tmp_path / "single.mkv",
                                                                       model=random_espcn, encoder="ffv1"))


def test_notices_print_above_the_workers_progress_bar(capsys):
    """A notice while the bar runs takes a line of its own, not the end of the bar's line."""
    from vidsr.jobs.distributed import _ProgressBar

    job = types.SimpleNamespace(total_frames=10, work=types.SimpleNamespace(frames=lambda: 0))
    handler = logging.StreamHandler(sys.stderr)  # as the CLI sets up its notices
    logging.getLogger().addHandler(handler)
    try:
        bar = _ProgressBar([job], show=True)
        bar.update(3)
        logging.getLogger("vidsr").warning("a notice")
        bar.close()
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert "\ra notice\n" in err and "]a notice" not in err


def test_workers_reuse_held_frames_with_the_threshold_asked_for(ray_session, random_espcn, tmp_path, capsys):
    """A frame one level off the one before it: within the threshold its output is the frame before's, and the
    workers' progress bar counts it."""
    still = picture(0, "yuv420p")
    src = write_planes(tmp_path / "in.mkv", [still, changed(still, 0, 1), picture(1, "yuv420p")], gop=1)
    out = frames_of(upscale_path(src, tmp_path / "out.mkv", model=random_espcn, device="cpu", encoder="ffv1",
                                 chunk_seconds=0.05, workers=2, reuse_held=1, progress=True)[0])
    assert "1 held frames reused" in capsys.readouterr().err
    every = frames_of(vidsr.upscale_video(src, tmp_path / "every.mkv", model=random_espcn, encoder="ffv1",
                                          reuse_held=False))
    assert [t for t, _ in out] == [t for t, _ in every]
    np.testing.assert_array_equal(out[0][1], every[0][1])
    assert np.array_equal(out[1][1], out[0][1]) and not np.array_equal(every[1][1], every[0][1])
    np.testing.assert_array_equal(out[2][1], every[2][1])


def test_workers_beyond_what_ray_can_place_are_capped(ray_session, caplog):
    assert worker_count(ray_session, 5, 1.0) == 2  # the module's Ray has 2 CPUs: 3 workers would never start
    assert "5 workers asked for, the Ray cluster has room for 2; running 2" in caplog.text
    assert worker_count(ray_session, None, 1.0) == 1  # no GPUs: one worker unless asked


def test_a_chunk_whose_workers_keep_dying_fails_in_one_line_after_three(ray_session, make_clip, random_espcn,
                                                                          tmp_path):
    src = make_clip("in.mkv", width=64, height=48, frames=6, codec="ffv1", options=())
    stop = threading.Event()

    def kill_every_worker() -> None:
        while not stop.is_set():
            for pid in worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_every_worker, daemon=True)
    killer.start()
    try:
        with pytest.raises(VidsrError) as failure:
            upscale_path(src, tmp_path / "out.mkv", model=random_espcn, device="cpu", encoder="ffv1", workers=1)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert str(failure.value).startswith("in.mkv chunk 0 (from 0.0 s) failed on 3 workers; the last one died")
    assert "\n" not in str(failure.value)
    assert (tmp_path / ".out.mkv.vidsr" / "manifest.json").exists()  # resumable


@pytest.mark.parametrize("lost", ["NodeDiedError", "RaySystemError", "OutOfMemoryError"])
def test_a_lost_node_or_ray_failure_retries_the_chunk(lost, caplog):
    """A chunk whose node went away is retried like one whose worker process died, never a traceback."""
    import ray

    from vidsr.jobs.distributed import RayRunner, _Task

    def get(_ref):
        raise getattr(ray.exceptions, lost)("gone")

    runner = object.__new__(RayRunner)
    runner.ray = types.SimpleNamespace(exceptions=ray.exceptions, get=get)
    job = types.SimpleNamespace(info=types.SimpleNamespace(path=Path("in.mkv"),
                                                           video=types.SimpleNamespace(time_base=Fraction(1, 25))))
    task = _Task(job, types.SimpleNamespace(index=3, start=50), attempts=1)
    with caplog.at_level(logging.WARNING):
        assert runner._collect(object(), task, bar=None) is False
    assert "in.mkv chunk 3 (from 2.0 s): the worker died" in caplog.text
