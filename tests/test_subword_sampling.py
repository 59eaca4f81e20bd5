"""Subword regularization: sampled segmentations of the stored pairs, seeded per batch, within
the length limits, exact on resume, and a training option that leaves the store alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heedful.batching import BatchStream, TokenArray
from heedful.config import ConfigError, load_config
from heedful.subword_sampling import SubwordSampler
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from heedful.training.prepare import ensure_store, prepare_data

TINY = ["tokenizer.vocab_size=500", "model.embed_dim=32", "model.hidden_dim=32",
        "train.batch_tokens=800", "train.valid_every=4", "train.log_every=2", "train.seed=5"]


@pytest.fixture()
def data(sample_files) -> list[str]:
    src, tgt = sample_files
    return ["data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}"]


@pytest.fixture(params=["bpe", "unigram"])
def prepared(request, tmp_path: Path, data: list[str]):
    """(tokenizer, source TokenArray, target TokenArray) of the sample corpus."""
    cfg = load_config(None, [*data, *TINY, f"tokenizer.type={request.param}"])
    prep = prepare_data(cfg, tmp_path / "run")
    return prep.tokenizer, prep.store.src, prep.store.tgt


def _text(tok: Tokenizer, rows: list[list[int]], side: str) -> list[str]:
    proc = tok.src if side == "src" else tok.tgt
    return [proc.decode([i for i in r if i > EOS_ID]) for r in rows]


def test_samples_change_the_pieces_not_the_text(prepared) -> None:
    tok, src, tgt = prepared
    rows = list(range(40))
    src_rows, tgt_rows = [src[i] for i in rows], [tgt[i] for i in rows]
    sampler = SubwordSampler(tok, alpha=0.3, nbest=-1, max_src_len=None, max_tgt_len=None)
    new_src, new_tgt = sampler(src_rows, tgt_rows, seed=7)
    assert all(r[-1] == EOS_ID and EOS_ID not in r[:-1] for r in new_src)
    assert all(EOS_ID not in r for r in new_tgt)
    assert _text(tok, new_src, "src") == _text(tok, [r.tolist() for r in src_rows], "src")
    assert _text(tok, new_tgt, "tgt") == _text(tok, [r.tolist() for r in tgt_rows], "tgt")
    stored = [r.tolist() for r in src_rows] + [r.tolist() for r in tgt_rows]
    assert new_src + new_tgt != stored  # some pair is segmented differently
    # sampled pieces are shorter on average: segmentations are longer
    assert sum(map(len, new_src + new_tgt)) > sum(map(len, stored))
    # the seed decides the sample
    assert sampler(src_rows, tgt_rows, seed=7) == (new_src, new_tgt)
    assert sampler(src_rows, tgt_rows, seed=8) != (new_src, new_tgt)


def test_a_sample_over_the_length_limits_keeps_the_stored_pieces(prepared) -> None:
    tok, src, tgt = prepared
    src_limit, tgt_limit = int(np.median(src.lengths)), int(np.median(tgt.lengths))
    # pairs the limits admit, as a store would hold them
    rows = [i for i in range(len(src)) if src.lengths[i] <= src_limit
            and tgt.lengths[i] <= tgt_limit][:60]
    src_rows, tgt_rows = [src[i] for i in rows], [tgt[i] for i in rows]
    free, free_tgt = SubwordSampler(tok, 0.5, -1, None, None)(src_rows, tgt_rows, seed=3)
    new_src, new_tgt = SubwordSampler(tok, 0.5, -1, src_limit, tgt_limit)(src_rows, tgt_rows,
                                                                         seed=3)
    over = [k for k, r in enumerate(free) if len(r) > src_limit]
    assert over  # the unlimited sample outgrows the limit somewhere
    for k in range(len(rows)):
        assert new_src[k] == (src_rows[k].tolist() if k in over else free[k])
        assert new_tgt[k] == (tgt_rows[k].tolist() if len(free_tgt[k]) > tgt_limit
                              else free_tgt[k])


def test_a_stream_draws_the_same_sample_at_the_same_position(prepared) -> None:
    tok, src, tgt = prepared
    sampler = SubwordSampler(tok, alpha=0.3, nbest=-1, max_src_len=None, max_tgt_len=None)

    def stream(prefetch: int) -> BatchStream:
        return BatchStream(src, tgt, 400, seed=5, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                           prefetch=prefetch, resegment=sampler)

    ahead, plain = stream(3), stream(0)
    first = [next(ahead) for _ in range(6)]
    ahead.close()
    plain.seek(0, 4)
    for batch in (next(plain), next(plain)):
        twin = first.pop(4)
        assert torch.equal(batch.src, twin.src) and torch.equal(batch.tgt_out, twin.tgt_out)
    again = stream(0).batch_at(0, 0)
    assert torch.equal(again.src, stream(0).batch_at(0, 0).src)
    # the same members as without sampling, in the same rows
    unsampled = BatchStream(src, tgt, 400, 5, PAD_ID, BOS_ID, EOS_ID).batch_at(0, 0)
    assert again.src.shape[0] == unsampled.src.shape[0]
    assert again.num_tgt_tokens >= unsampled.num_tgt_tokens


def test_resume_is_exact_with_sampling(data: list[str], check_exact_resume) -> None:
    check_exact_resume([*data, *TINY], ["tokenizer.sampling_alpha=0.2"])


def test_turning_sampling_on_keeps_the_tokenizer_and_the_store(tmp_path: Path,
                                                               data: list[str]) -> None:
    run = tmp_path / "run"
    ensure_store(load_config(None, [*data, *TINY]), run)
    spm = (run / "spm.model").read_bytes()
    on = load_config(None, [*data, *TINY, "tokenizer.sampling_alpha=0.1"])
    assert ensure_store(on, run) is None
    assert (run / "spm.model").read_bytes() == spm


def test_sampling_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tokenizer.sampling_alpha: 1.0 is BPE-dropout's "
                                          "probability of dropping a merge; it must be below 1"):
        load_config(None, ["tokenizer.sampling_alpha=1.0"])
    with pytest.raises(ConfigError, match="tokenizer.sampling_nbest: 1 leaves one "
                                          "segmentation to sample from"):
        load_config(None, ["tokenizer.type=unigram", "tokenizer.sampling_alpha=0.1",
                           "tokenizer.sampling_nbest=1"])
    with pytest.raises(ConfigError, match="tokenizer.sampling_alpha"):
        load_config(None, ["tokenizer.sampling_alpha=0"])
    links = tmp_path / "links.txt"
    with pytest.raises(ConfigError, match="train.guided_alignment_weight and "
                                          "tokenizer.sampling_alpha cannot be combined"):
        load_config(None, [f"data.train.alignments={links}", "train.guided_alignment_weight=1",
                           "tokenizer.sampling_alpha=0.1"])


def test_links_cannot_follow_a_resegmented_batch() -> None:
    arr = TokenArray.from_lists([[5, EOS_ID]])
    with pytest.raises(ValueError, match="links are indices into the stored segmentation"):
        BatchStream(arr, arr, 100, 0, PAD_ID, BOS_ID, EOS_ID, links=arr,
                    resegment=lambda s, t, seed: ([], []))
