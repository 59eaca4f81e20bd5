"""Atomic, self-describing, pickle-free checkpoints.

A run directory::

    RUN_DIR/config.yaml             the effective config
    RUN_DIR/spm*.model              SentencePiece model(s), SentencePiece's own format
    RUN_DIR/train.log, metrics.jsonl
    RUN_DIR/checkpoints/step-00001000/
        model.safetensors           weights (tied tensors stored once, aliases in metadata)
        optimizer.safetensors       optimizer tensors (absent in exported models)
        trainer_state.json          step, epoch, data position, schedule, RNG, best score, ...
        manifest.json               format version + sha256 of every file above
    RUN_DIR/checkpoints/latest      pointer files holding a checkpoint's directory name
    RUN_DIR/checkpoints/best

Every checkpoint is written into a temporary directory, each file fsynced, then renamed into
place and the parent directory fsynced; pointers are replaced atomically the same way. The
checksums are verified on load. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from heedful.errors import CheckpointError

FORMAT_VERSION = 1
_STEP_PREFIX = "step-"


# --------------------------------------------------------------------------- fs helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary name, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- tensors


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store tied tensors once: returns (tensors, {alias: stored name})."""
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    tensors, aliases = {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.detach().contiguous()
    return tensors, aliases


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file before a loader touches it."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header. Check that
    # shape first: the length's low byte may itself be 0x80, pickle's first byte.
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) == 9 and head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8:
        return
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path} is a pickle / torch.save file, not safetensors; heedful never unpickles "
            "(loading a pickle can run arbitrary code)")
    raise CheckpointError(f"{path} is not a safetensors file (truncated or altered)")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    _check_safetensors(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read as safetensors ({err})") from None
    return tensors, metadata


def model_state(path: Path) -> dict[str, torch.Tensor]:
    """Weights of ``model.safetensors`` as float32 with tied aliases restored."""
    tensors, metadata = read_tensors(path)
    try:
        aliases = json.loads(metadata.get("aliases", "{}"))
        if not isinstance(aliases, dict) or not all(n in tensors for n in aliases.values()):
            raise ValueError("aliases name tensors the file does not hold")
    except ValueError as err:  # JSONDecodeError is one
        raise CheckpointError(f"{path}: its metadata is corrupt ({err})") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    for alias, name in aliases.items():
        state[alias] = state[name]
    return state


def load_model_weights(model: nn.Module, ckpt: Path) -> None:
    state = model_state(ckpt / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{ckpt / 'model.safetensors'} does not fit this model's config: {err}") from None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                    list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{idx}.{key}"] = t.detach().contiguous()
    return tensors, sd["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt: Path,
                   param_groups: list[dict[str, Any]]) -> None:
    tensors, _ = read_tensors(ckpt / "optimizer.safetensors")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    # the implementation flags are this optimizer's, not the saving run's (a run saved before
    # the fused kernel resumes on it)
    impl = ("fused", "foreach", "capturable", "differentiable")
    groups = param_groups
    if len(param_groups) == len(optimizer.param_groups):  # else load_state_dict says why
        groups = [{**saved, **{k: now[k] for k in impl if k in now}}
                  for saved, now in zip(param_groups, optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --------------------------------------------------------------------------- save


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    keep_last: int = 3,
    is_best: bool = False,
    half: bool = False,
) -> Path:
    """Save atomically; update ``latest`` (and ``best``); prune to the last ``keep_last``."""
    ckpt_root = run_dir / "checkpoints"
    name = f"{_STEP_PREFIX}{step:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tensors, aliases = _dedupe(model.state_dict())
        if half:
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / "model.safetensors"),
                  metadata={"aliases": json.dumps(aliases), "format_version": str(FORMAT_VERSION)})
        state = dict(trainer_state)
        state["format_version"] = FORMAT_VERSION
        if optimizer is not None:
            opt_tensors, groups = _optimizer_tensors(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            state["optimizer_param_groups"] = groups
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
        for f in files:
            _fsync_file(tmp / f)
        manifest = {"format_version": FORMAT_VERSION,
                    "files": {f: _sha256(tmp / f) for f in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _fsync_file(tmp / "manifest.json")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
    except (OSError, SafetensorError) as err:
        # safetensors reports a failed write (disk full, file too large) as SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(err, "strerror", None) or str(err)
        raise CheckpointError(
            f"could not write checkpoint {final}: {reason}; earlier checkpoints "
            "are intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        atomic_write_text(ckpt_root / "latest", name + "\n")
        if is_best:
            atomic_write_text(ckpt_root / "best", name + "\n")
    except OSError as err:
        raise CheckpointError(
            f"could not update the pointers in {ckpt_root}: {err.strerror or err}; the "
            "checkpoints themselves are intact") from None
    _prune(ckpt_root, keep_last)
    return final


def _prune(ckpt_root: Path, keep_last: int) -> None:
    protected = {_read_pointer(ckpt_root, p) for p in ("best", "latest")}
    steps = sorted(p for p in ckpt_root.iterdir() if p.name.startswith(_STEP_PREFIX))
    for old in steps[:-keep_last]:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)


def _read_pointer(ckpt_root: Path, which: str) -> str | None:
    """The checkpoint directory name that pointer file ``which`` holds (None: no pointer).
    A pointer that is not a ``step-NNNNNNNN`` name is a CheckpointError naming it."""
    path = ckpt_root / which
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, IsADirectoryError, OSError) as err:
        raise CheckpointError(f"{path} cannot be read as a checkpoint pointer ({err})") from None
    if not name:
        return None
    if not (name.startswith(_STEP_PREFIX) and name[len(_STEP_PREFIX):].isdigit()):
        raise CheckpointError(f"{path} does not name a checkpoint (it holds {name[:40]!r}; "
                              f"expected {_STEP_PREFIX}NNNNNNNN)")
    return name


# --------------------------------------------------------------------------- load


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Check the manifest's checksums; returns the trainer state. Raises CheckpointError."""
    manifest_path = ckpt / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{manifest_path} is missing (incomplete checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{manifest_path} is corrupt ({err})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{manifest_path} is corrupt (not a JSON object)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: checkpoint format {manifest.get('format_version')!r} is not "
            f"supported (this heedful reads format {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and "/" not in k
                                              and isinstance(v, str) for k, v in files.items()):
        raise CheckpointError(f"{manifest_path} is corrupt (no valid \"files\" entry)")
    for fname, digest in files.items():
        path = ckpt / fname
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path} is corrupt: its checksum does not match the manifest")
    state_path = ckpt / "trainer_state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{state_path} is missing (incomplete checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{state_path} is corrupt ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path} is corrupt (not a JSON object)")
    return state


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The checkpoint that ``which`` (best, then latest) points to, verified."""
    ckpt_root = run_dir / "checkpoints"
    for pointer in (which, "latest"):
        name = _read_pointer(ckpt_root, pointer)
        if name:
            ckpt = ckpt_root / name
            verify_checkpoint(ckpt)
            return ckpt
    raise CheckpointError(
        f"{run_dir} has no checkpoint (no {ckpt_root}/best or latest); "
        "train a model first with `heedful train`")


def newest_intact(run_dir: Path) -> tuple[Path | None, list[str]]:
    """For resuming: the newest checkpoint whose checksums verify, and why others were
    skipped."""
    ckpt_root = run_dir / "checkpoints"
    problems: list[str] = []
    if not ckpt_root.is_dir():
        return None, problems
    for ckpt in sorted((p for p in ckpt_root.iterdir() if p.name.startswith(_STEP_PREFIX)),
                       reverse=True):
        try:
            verify_checkpoint(ckpt)
            return ckpt, problems
        except CheckpointError as err:
            problems.append(str(err))
    return None, problems


def _start_run_dir(run_dir: Path, out_dir: Path) -> None:
    """A new run directory holding ``run_dir``'s config and tokenizer (refuses to mix into
    a non-empty one)."""
    from heedful.tokenizer import Tokenizer

    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(f"{out_dir} exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "config.yaml", out_dir / "config.yaml")
    for f in Tokenizer.files(run_dir):
        shutil.copy(f, out_dir / f.name)


def export_run(run_dir: Path, out_dir: Path, half: bool = True) -> Path:
    """Copy a run's best checkpoint into a new self-contained run directory for inference:
    config, tokenizer, weights (fp16 if ``half``), no optimizer."""
    from heedful.config import frontend_of, load_config
    from heedful.nn.architectures import build_model
    from heedful.tokenizer import Tokenizer

    ckpt = find_checkpoint(run_dir)
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir)
    model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size,
                        frontend=frontend_of(config))
    load_model_weights(model, ckpt)
    state = verify_checkpoint(ckpt)
    keep: dict[str, Any] = {k: state[k] for k in
                            ("step", "epoch", "best_score", "best_step", "train_seconds")
                            if k in state}
    keep["exported_from"] = str(run_dir)
    _start_run_dir(run_dir, out_dir)
    return save_checkpoint(out_dir, int(state.get("step", 0)), model, keep, None, keep_last=1,
                           is_best=True, half=half)


def average_run(run_dir: Path, out_dir: Path, last: int, half: bool = False) -> Path:
    """Average the weights of the run's ``last`` newest intact checkpoints (Junczys-Dowmunt
    et al. 2016; what fairseq, OpenNMT-py and Marian ship) into a new self-contained run
    directory: config, tokenizer, one averaged checkpoint (no optimizer)."""
    from heedful.config import frontend_of, load_config
    from heedful.nn.architectures import build_model
    from heedful.tokenizer import Tokenizer

    if last < 1:
        raise CheckpointError(f"--last {last}: give at least 1 checkpoint")
    ckpt_root = run_dir / "checkpoints"
    steps = sorted(p for p in ckpt_root.iterdir() if p.name.startswith(_STEP_PREFIX)) \
        if ckpt_root.is_dir() else []
    intact, problems = [], []
    for ckpt in reversed(steps):
        try:
            verify_checkpoint(ckpt)
            intact.append(ckpt)
        except CheckpointError as err:
            problems.append(str(err))
        if len(intact) == last:
            break
    if len(intact) < last:
        raise CheckpointError(
            f"{run_dir} has {len(intact)} intact checkpoint(s), fewer than --last {last} "
            "(train.keep_last decides how many a run keeps)"
            + (f"; damaged: {'; '.join(problems)}" if problems else ""))
    chosen = sorted(intact)
    total: dict[str, torch.Tensor] = {}
    for ckpt in chosen:
        for name, tensor in model_state(ckpt / "model.safetensors").items():
            if tensor.is_floating_point():
                total[name] = total[name] + tensor if name in total else tensor.clone()
            else:
                total.setdefault(name, tensor)
    averaged = {k: v / len(chosen) if v.is_floating_point() else v for k, v in total.items()}
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir)
    model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size,
                        frontend=frontend_of(config))
    model.load_state_dict(averaged)
    _start_run_dir(run_dir, out_dir)
    last_state = verify_checkpoint(chosen[-1])
    step = int(last_state.get("step", 0))
    state = {"step": step, "averaged_from": str(run_dir),
             "averaged_checkpoints": [c.name for c in chosen]}
    return save_checkpoint(out_dir, step, model, state, None, keep_last=1,
                           is_best=True, half=half)
