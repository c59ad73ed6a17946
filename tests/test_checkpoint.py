"""Checkpoint files: project safetensors with metadata, third-party .pth wrappers, refusal of pickled code."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import torch

from vidsr.cli import main
from vidsr.errors import ModelError
from vidsr.models.archs import create_model
from vidsr.models.checkpoint import load_checkpoint, save_checkpoint, store_half, unwrap_state_dict, update_metadata
from vidsr.models.zoo import bundled_weights, list_models, load_model, model_card


def tiny_espcn(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("espcn", scale=3, channels=1, features=8, mid_features=4, act="relu")


def outputs_match(a, b) -> bool:
    x = torch.rand(1, a.in_channels, 7, 9)
    with torch.no_grad():
        return torch.equal(a.model.eval()(x), b.model.eval()(x))


def test_safetensors_round_trip_keeps_metadata_and_non_shape_hyperparams(tmp_path: Path) -> None:
    model = tiny_espcn()
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="tiny", psnr={"Set5": 30.5})
    loaded = load_model(path)
    assert loaded.metadata["psnr"] == {"Set5": 30.5}
    assert loaded.metadata["name"] == "tiny"
    assert loaded.hyperparams["act"] == "relu"  # not readable from shapes: comes from the metadata
    assert outputs_match(model, loaded)
    update_metadata(path, psnr={"Set5": 31.0})
    assert load_model(path).metadata["psnr"] == {"Set5": 31.0}


def test_a_safetensors_header_length_never_passes_for_a_pickle(tmp_path: Path) -> None:
    """A safetensors file starts with its header's length: one ending in 0x80 was taken for a legacy torch.save
    pickle, loaded without its metadata, and so built as another architecture (a bundled model lost 2 dB)."""
    torch.manual_seed(0)
    descriptor = create_model("srvgg", scale=2, channels=3, features=8, convs=2, upsample="bilinear")
    path = tmp_path / "model.safetensors"
    for padding in range(256):
        save_checkpoint(path, descriptor, name="padded", note="x" * padding)
        if path.read_bytes()[0] == 0x80:  # the pickle protocol opcode
            break
    assert path.read_bytes()[0] == 0x80
    loaded = load_model(path)
    assert loaded.source == "vidsr" and loaded.metadata["name"] == "padded"
    assert loaded.hyperparams["upsample"] == "bilinear"


def test_saving_a_model_mid_training_leaves_it_in_training_mode(tmp_path: Path) -> None:
    model = tiny_espcn()
    model.model.train()
    save_checkpoint(tmp_path / "m.safetensors", model, name="tiny")  # measures its cost with a forward pass
    assert model.model.training


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path: Path) -> None:
    model = tiny_espcn()
    path = save_checkpoint(tmp_path / "m.safetensors", model, name="tiny")
    size = path.stat().st_size
    store_half(path)
    assert path.stat().st_size < 0.6 * size
    tensors, metadata = load_checkpoint(path)
    assert {t.dtype for t in tensors.values()} == {torch.float16} and metadata["name"] == "tiny"
    loaded = load_model(path)
    assert next(loaded.model.parameters()).dtype == torch.float32
    x = torch.rand(1, 1, 12, 12)
    assert torch.allclose(model.model.eval()(x), loaded.model.eval()(x), atol=2e-3)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
    lambda sd: {"params": sd},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
])
def test_pth_wrappers_and_prefixes_are_unwrapped(tmp_path: Path, wrap) -> None:
    model = create_model("espcn", scale=2, channels=1, features=8, mid_features=4)
    path = tmp_path / "third_party.pth"
    torch.save(wrap(model.model.state_dict()), path)
    assert outputs_match(model, load_model(path))


def test_unwrap_rejects_a_dict_without_tensors() -> None:
    with pytest.raises(ModelError, match="no tensors"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}})


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Exploit(marker)}, path)
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unknown_name_lists_bundled_models() -> None:
    with pytest.raises(ModelError, match="bundled models") as info:
        load_model("no-such-model")
    for name in bundled_weights():
        assert name in str(info.value)


def test_corrupt_and_unknown_files_are_model_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError):
        load_model(bad)
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_model(other)


def test_every_bundled_weight_file_is_a_listed_model() -> None:
    infos = {info.name: info for info in list_models() if info.source == "vidsr"}
    assert set(infos) == set(bundled_weights())  # Real-ESRGAN's, where installed, follow (tests/test_ncnn.py)
    for info in infos.values():
        assert info.params > 0 and info.gmacs_1080p > 0
        assert load_model(info.name).scale == info.scale
    # the pairs a model learnt from come from its recipe: the real-world model's degradations, or bicubic
    assert infos["srvgg-x2-video"].pairs == "degraded" and infos["srvgg-x2"].pairs == "bicubic"


def test_model_card_and_models_command_show_recorded_figures(tmp_path: Path, capsys) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_espcn(), name="tiny-x3", psnr={"Set5": 30.5},
                           ssim={"Set5": 0.9}, recipe={"data": ["t91"], "iterations": 10})
    card = model_card(path)
    assert card.startswith("# tiny-x3")
    assert "| Set5 | 30.50 | 0.9000 |" in card and "10 iterations" in card
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for info in list_models():
        assert info.name in listed


@pytest.mark.parametrize(("field", "value", "words"), [
    ("hyperparams", "features=8", "header's 'hyperparams' must be an object of hyper-parameters, not \"features=8\""),
    ("hyperparams", {"act": "relu", "dropout": 0.1}, "hyperparams has 'dropout', which espcn does not take"),
    ("hyperparams", {"act": 3}, "hyperparams 'act' must be a str, not 3"),
    ("hyperparams", {"mid_features": 10**9}, "hyperparams 'mid_features' must be a whole number from 1 to 4096"),
    ("hyperparams", {"act": "bogus"}, "tiny: its header's hyperparams do not build the espcn network"),
    ("arch", ["espcn"], "header's 'arch' must be one of vidsr's architectures"),
    ("scale", "3", "header's 'scale' must be a whole number from 1 to 8, not \"3\""),
    ("color", None, "header's 'color' must be \"y\" or \"rgb\", not null"),
    ("psnr", {"Set5": "high"}, "header's 'psnr' must be an object of numbers"),
    ("psnr_model", 5, "header's 'psnr_model' must be a model name or file name, not 5"),
])
def test_a_malformed_header_is_one_line_naming_the_field(tmp_path: Path, field: str, value, words: str) -> None:
    """`hyperparams` a string, an unknown hyper-parameter, `arch` a list: each crashed while building the model."""
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_espcn(), name="tiny")
    update_metadata(path, **{field: value})
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(("m.safetensors: ", "tiny: "))  # the file, or the name in its header


# --- fuzz: damaged weight files through the CLI ---------------------------------------------------------------

_DTYPES = ("F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "F8_E4M3", "X9")
_JSON_VALUES = ("text", 7, -1, 2.5, None, True, [], [1, "a"], {}, {"a": 1}, 10**20)


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def _safetensors_bytes(header: dict, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


def _mutate_header(rng: random.Random, data: bytes) -> bytes:
    """A header that still parses as JSON with a field changed: a tensor's dtype, shape or offsets, or a
    metadata value (vidsr's own fields included)."""
    header, body = _safetensors_parts(data)
    tensor = rng.choice([key for key in header if key != "__metadata__"])
    choice = rng.randrange(4)
    if choice == 0:
        header[tensor]["dtype"] = rng.choice(_DTYPES)
    elif choice == 1:
        header[tensor]["shape"] = [rng.choice([0, 1, 3, 64, -2]) for _ in range(rng.randrange(5))]
    elif choice == 2:
        start, end = header[tensor]["data_offsets"]
        header[tensor]["data_offsets"] = rng.choice([[end, start], [start, end + 4], [0, len(body) * 2], [-1, 3]])
    else:
        metadata = header.setdefault("__metadata__", {})
        field = rng.choice(["arch", "scale", "color", "hyperparams", "psnr", "psnr_model", "name", "recipe", "x"])
        metadata[field] = json.dumps(rng.choice(_JSON_VALUES)) if rng.random() < 0.8 else "{not json"
    return _safetensors_bytes(header, body)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Truncated anywhere, or a few bytes overwritten anywhere (the length prefix and the header included)."""
    if rng.random() < 0.5:
        return data[:rng.randrange(len(data))]
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        damaged[rng.randrange(min(len(damaged), 64) if rng.random() < 0.5 else len(damaged))] = rng.randrange(256)
    return bytes(damaged)


def test_fuzzed_weight_files_exit_0_or_1_with_one_line_and_leave_nothing(tmp_path: Path, make_clip, capsys) -> None:
    """Seeded and bounded: damaged vidsr safetensors (header and tensors), third-party safetensors and torch.save
    files through `vidsr upscale`: exit 0 or 1, on failure one `vidsr: error:` line, no traceback (an exception
    out of main is one), and nothing left beside the input and the model file."""
    from tests.third_party import random_state_dict, save_third_party

    work = tmp_path / "work"
    work.mkdir()
    src = make_clip("in.mp4", width=16, height=12, frames=2)
    sources = {
        "own.safetensors": save_checkpoint(tmp_path / "own.safetensors", tiny_espcn(), name="tiny").read_bytes(),
        "compact.safetensors": save_third_party(tmp_path / "c.safetensors", random_state_dict("compact_x2")
                                                ).read_bytes(),
        "compact.pth": save_third_party(tmp_path / "c.pth", random_state_dict("compact_x2")).read_bytes(),
    }
    rng = random.Random(30)
    outcomes = []
    for case in range(36):
        name, data = rng.choice(list(sources.items()))
        mutate = _mutate_header if name.endswith(".safetensors") and rng.random() < 0.6 else _mutate_bytes
        model = work / name
        model.write_bytes(mutate(rng, data))
        out = work / "out.mkv"
        try:
            code = main(["upscale", str(src), "-o", str(out), "-m", str(model), "--device", "cpu", "-q"])
        except Exception as exc:  # noqa: BLE001 - reported with the case that caused it
            pytest.fail(f"case {case} ({name}, {mutate.__name__}): {type(exc).__name__}: {exc}")
        err = capsys.readouterr().err
        assert code in (0, 1), (case, err)
        assert err == "" if code == 0 else (err.count("\n") == 1 and err.startswith("vidsr: error: ")), (case, err)
        out.unlink(missing_ok=True)
        model.unlink()
        assert list(work.iterdir()) == [], case
        outcomes.append(code)
    assert outcomes.count(1) > 18  # most damage is refused, not run
