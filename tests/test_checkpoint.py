"""Checkpoints: round trip, checksums, fallback, and never unpickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from heedful.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_model_weights,
    load_optimizer,
    newest_intact,
    save_checkpoint,
    verify_checkpoint,
)
from heedful.nn.architectures import build_model, model_config

CFG = model_config(embed_dim=16, hidden_dim=16, tie_output=True, share_embeddings=True)


def model_and_optimizer():
    model = build_model(CFG, 30, 30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.tensor([[5, 6, 3]]), torch.tensor([[True] * 3]), torch.tensor([[2, 7]])).sum() \
        .backward()
    opt.step()
    return model, opt


def test_round_trip_with_tied_weights_and_optimizer(tmp_path: Path) -> None:
    model, opt = model_and_optimizer()
    ckpt = save_checkpoint(tmp_path, 7, model, {"step": 7}, opt, is_best=True)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "manifest.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    state = verify_checkpoint(ckpt)
    assert state["step"] == 7 and state["format_version"] == 1
    fresh = build_model(CFG, 30, 30)
    load_model_weights(fresh, ckpt)
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert fresh.output.weight is fresh.tgt_embed.weight  # still tied
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    load_optimizer(fresh_opt, ckpt, state["optimizer_param_groups"])
    saved, loaded = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for idx in saved:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved[idx][key], loaded[idx][key]), (idx, key)


def test_keep_last_and_pointers(tmp_path: Path) -> None:
    model, opt = model_and_optimizer()
    save_checkpoint(tmp_path, 1, model, {}, opt, keep_last=2, is_best=True)
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, model, {}, opt, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step-00000001", "step-00000003", "step-00000004"]  # best is kept
    assert find_checkpoint(tmp_path).name == "step-00000001"
    assert find_checkpoint(tmp_path, "latest").name == "step-00000004"


def test_corrupt_checkpoint_names_file_and_resume_falls_back(tmp_path: Path) -> None:
    model, opt = model_and_optimizer()
    save_checkpoint(tmp_path, 1, model, {}, opt)
    newest = save_checkpoint(tmp_path, 2, model, {}, opt)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncate
    with pytest.raises(CheckpointError, match=r"step-00000002/model\.safetensors is corrupt"):
        verify_checkpoint(newest)
    intact, problems = newest_intact(tmp_path)
    assert intact is not None and intact.name == "step-00000001"
    assert len(problems) == 1 and "step-00000002" in problems[0]


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(PAYLOAD_MARKER),))


PAYLOAD_MARKER = "/tmp/heedful-pickle-payload-ran"


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    Path(PAYLOAD_MARKER).unlink(missing_ok=True)
    model, opt = model_and_optimizer()
    ckpt = save_checkpoint(tmp_path, 1, model, {}, opt)
    # plant a pickle (what torch.save would write) where the weights are expected
    (ckpt / "model.safetensors").write_bytes(pickle.dumps({"w": Payload()}))
    fresh = build_model(CFG, 30, 30)
    with pytest.raises(CheckpointError, match="is a pickle / torch.save file, not safetensors"):
        load_model_weights(fresh, ckpt)  # loading without the manifest check still refuses
    with pytest.raises(CheckpointError, match="checksum does not match"):
        verify_checkpoint(ckpt)
    assert not Path(PAYLOAD_MARKER).exists()


def test_run_dir_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="has no checkpoint .* train a model first"):
        find_checkpoint(tmp_path)


def test_safetensors_whose_header_length_starts_like_a_pickle_loads(tmp_path: Path) -> None:
    """A header of 0x...80 bytes makes the file's first byte 0x80, pickle's first opcode —
    a real checkpoint once tripped over this; the safetensors shape is checked first."""
    import torch
    from safetensors.torch import save_file

    from heedful.checkpoint import read_tensors

    path = tmp_path / "model.safetensors"
    for pad in range(300):
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    tensors, metadata = read_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(2)) and "pad" in metadata


def test_resume_keeps_this_runs_optimizer_kernel(tmp_path: Path) -> None:
    """A checkpoint saved by an unfused Adam resumes on the fused kernel that train builds
    (and back): the moments carry over, the implementation flag is the resuming run's."""
    model, opt = model_and_optimizer()  # torch's default (unfused) Adam
    ckpt = save_checkpoint(tmp_path, 1, model, {"step": 1}, opt)
    state = verify_checkpoint(ckpt)
    fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    load_optimizer(fused, ckpt, state["optimizer_param_groups"])
    assert fused.param_groups[0]["fused"] is True
    assert torch.equal(fused.state_dict()["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])
    fused.step()  # the fused kernel accepts the loaded state
    plain = torch.optim.Adam(model.parameters(), lr=1e-3)
    load_optimizer(plain, save_checkpoint(tmp_path, 2, model, {"step": 2}, fused),
                   state["optimizer_param_groups"])
    assert not plain.param_groups[0]["fused"]
