"""Word alignments from a trained model: force-decode given pairs, read the attention, and
choose (on a dev set with gold links) the layer, head, step shift and extraction method.

The chosen settings are stored in the run directory as ``alignment.json`` and become that
run's defaults for ``heedful align`` and ``heedful evaluate --align``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heedful.analysis.word_alignment import (
    AlignmentScores,
    Link,
    alignment_scores,
    encode_words,
    extract_links,
    word_matrix,
    words,
)
from heedful.checkpoint import CheckpointError, atomic_write_text
from heedful.config import ConfigError
from heedful.decoding.forced import force_decode
from heedful.decoding.translator import Translator

SETTINGS_FILE = "alignment.json"
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class AlignSettings:
    """How links are read from attention.

    layer: decoder layer index (negative counts from the end) or ``None`` for the mean over
    layers; head: head index or ``None`` for the mean over heads; shift: 0 = the step that
    predicts a target word, 1 = the step that reads it; method/threshold: see
    :func:`heedful.analysis.word_alignment.extract_links`.
    """

    method: str = "argmax"
    layer: int | None = -1
    head: int | None = None
    shift: int = 0
    threshold: float = 0.3

    def describe(self) -> str:
        layer = "mean" if self.layer is None else str(self.layer)
        head = "mean" if self.head is None else str(self.head)
        extra = f" >= {self.threshold}" if self.method == "threshold" else ""
        return f"{self.method}{extra}, layer {layer}, head {head}, shift {self.shift}"


@dataclass
class PairAttention:
    """One pair's attention over subwords and the word each subword belongs to."""

    attention: np.ndarray  # (T_steps, L, H, S_pieces + EOS)
    src_owner: list[int]
    tgt_owner: list[int]
    num_src_words: int
    num_tgt_words: int
    src_pieces: list[str] = field(default_factory=list)
    tgt_pieces: list[str] = field(default_factory=list)

    def select(self, layer: int | None, head: int | None) -> np.ndarray:
        """(T_steps, S) weights of one layer/head, or their means."""
        a = self.attention
        a = a.mean(1) if layer is None else a[:, layer]
        return a.mean(1) if head is None else a[:, head]

    def matrix(self, s: AlignSettings) -> np.ndarray:
        return word_matrix(self.select(s.layer, s.head), self.src_owner, self.tgt_owner,
                           self.num_src_words, self.num_tgt_words, s.shift)

    def links(self, s: AlignSettings) -> set[Link]:
        return extract_links(self.matrix(s), s.method, s.threshold)


def pair_attention(translator: Translator, src_lines: Sequence[str], tgt_lines: Sequence[str],
                   progress: bool = False) -> list[PairAttention]:
    """Force-decode each pair (split into words as the gold files do) and keep its attention."""
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{len(src_lines)} source lines but {len(tgt_lines)} target lines")
    tok = translator.tokenizer
    src_enc = [encode_words(tok.src, line) for line in src_lines]
    tgt_enc = [encode_words(tok.tgt, line) for line in tgt_lines]
    from heedful.tokenizer import EOS_ID

    forced = force_decode(translator.model, [[*ids, EOS_ID] for ids, _ in src_enc],
                          [ids for ids, _ in tgt_enc], need_attention=True, progress=progress)
    out = []
    for (s_ids, s_own), (t_ids, t_own), f, s_line, t_line in zip(
            src_enc, tgt_enc, forced, src_lines, tgt_lines, strict=True):
        if f.attention is None:
            raise CheckpointError("this model has no attention (attention: none), so it "
                                  "cannot align words")
        out.append(PairAttention(f.attention, s_own, t_own, len(words(s_line)),
                                 len(words(t_line)), tok.src_pieces([*s_ids, EOS_ID]),
                                 tok.tgt_pieces([*t_ids, EOS_ID])))
    return out


def candidate_settings(num_layers: int, num_heads: int) -> list[AlignSettings]:
    """Every layer (and the mean), every head (and the mean), both shifts, every method."""
    layers: list[int | None] = [None, *range(num_layers)] if num_layers > 1 else [-1]
    heads: list[int | None] = [None, *range(num_heads)] if num_heads > 1 else [None]
    out = []
    for layer, head, shift in itertools.product(layers, heads, (0, 1)):
        for method in ("argmax", "source-argmax", "intersect"):
            out.append(AlignSettings(method, layer, head, shift))
        for t in THRESHOLDS:
            out.append(AlignSettings("threshold", layer, head, shift, t))
    return out


def tune(pairs: Sequence[PairAttention], sure: Sequence[set[Link]],
         possible: Sequence[set[Link]] | None,
         metric: str = "aer_restricted") -> tuple[AlignSettings, AlignmentScores,
                                                  list[dict[str, Any]]]:
    """The settings with the lowest ``metric`` on these (dev) pairs, and the whole table."""
    if not pairs:
        raise ValueError("no pairs to tune on")
    _, num_layers, num_heads, _ = pairs[0].attention.shape
    table = []
    best: tuple[float, AlignSettings, AlignmentScores] | None = None
    matrices: dict[tuple[int | None, int | None, int], list[np.ndarray]] = {}
    for settings in candidate_settings(num_layers, num_heads):
        key = (settings.layer, settings.head, settings.shift)
        if key not in matrices:  # one word matrix per layer/head/shift, shared by the methods
            matrices = {key: [p.matrix(settings) for p in pairs]}
        predicted = [extract_links(m, settings.method, settings.threshold)
                     for m in matrices[key]]
        scores = alignment_scores(predicted, sure, possible)
        value = getattr(scores, metric)
        table.append({**asdict(settings), **scores.as_dict()})
        if best is None or value < best[0]:
            best = (value, settings, scores)
    assert best is not None
    return best[1], best[2], table


def save_settings(run_dir: Path, settings: AlignSettings, scores: AlignmentScores,
                  tuned_on: str) -> Path:
    path = run_dir / SETTINGS_FILE
    atomic_write_text(path, json.dumps({"settings": asdict(settings), "tuned_on": tuned_on,
                                        "scores": scores.as_dict()}, indent=1) + "\n")
    return path


def load_settings(run_dir: Path) -> AlignSettings | None:
    """The run's tuned settings (``alignment.json``), or ``None`` if it was never tuned."""
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return AlignSettings(**json.loads(path.read_text(encoding="utf-8"))["settings"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a valid alignment settings file ({err})") from None


def run_settings(run_dir: Path) -> AlignSettings:
    """The settings a run aligns with by default: its tuned ones (``alignment.json``); else,
    for a run trained with guided alignment, the layer and head that the loss supervised, at
    the step that predicts each word (shift 0, as the loss reads it); else the defaults."""
    tuned = load_settings(run_dir)
    if tuned is not None:
        return tuned
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        from heedful.config import load_config

        cfg = load_config(config_file)
        if cfg.train.guided_alignment_weight is not None:
            return AlignSettings(layer=cfg.model.alignment_layer, head=cfg.model.alignment_head,
                                 shift=0)
    return AlignSettings()


def check_settings(settings: AlignSettings, pairs: Sequence[PairAttention]) -> None:
    """Clear errors for a layer/head the model does not have."""
    if not pairs:
        return
    _, layers, heads, _ = pairs[0].attention.shape
    if settings.layer is not None and not -layers <= settings.layer < layers:
        raise ConfigError(f"--layer {settings.layer}: the model has {layers} decoder "
                          f"layer(s) with attention (0..{layers - 1})")
    if settings.head is not None and not -heads <= settings.head < heads:
        raise ConfigError(f"--head {settings.head}: the model has {heads} attention "
                          f"head(s) (0..{heads - 1})")
