"""A tiny synthetic audio corpus for tests and smoke checks: strings of four "words", each a
tone chord, written as WAV files with manifests in the layout of :mod:`heedful.manifest`.

Every word is a 0.12 s burst of two sine tones at its own frequencies; the gaps between
words, the loudness and a little background noise vary, so transcribing means finding where
each word is, not memorising lengths. A small model learns it within a minute on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS: dict[str, tuple[float, float]] = {
    "a": (400.0, 1300.0), "b": (700.0, 2100.0), "c": (1000.0, 2900.0), "d": (1500.0, 3400.0)}
"""The vocabulary: each word's two tone frequencies (Hz)."""
RATE = 8000


def utterance(words: list[str], rng: np.random.Generator) -> np.ndarray:
    """The samples (float32 at :data:`RATE`) of ``words`` said one after another."""
    t = np.arange(int(0.12 * RATE)) / RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
    parts = [np.zeros(int(rng.uniform(0.05, 0.15) * RATE))]
    for word in words:
        low, high = WORDS[word]
        tone = (np.sin(2 * np.pi * low * t) + 0.6 * np.sin(2 * np.pi * high * t)) * ramp
        parts += [rng.uniform(0.2, 0.5) * tone, np.zeros(int(rng.uniform(0.04, 0.12) * RATE))]
    audio = np.concatenate(parts)
    audio += rng.normal(0, 0.003, audio.shape)
    return audio.astype(np.float32)


def write_tone_corpus(out_dir: Path, sizes: dict[str, int], max_length: int = 3,
                      seed: int = 0) -> Path:
    """Write ``sizes[split]`` utterances of 1..``max_length`` words for each split as
    ``out_dir/audio/{split}/N.wav`` with manifests ``{split}.tsv`` (targets: the words,
    space-separated); return ``out_dir``."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    names = sorted(WORDS)
    for split, count in sizes.items():
        folder = out_dir / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            words = [names[int(k)] for k in rng.integers(0, len(names),
                                                          int(rng.integers(1, max_length + 1)))]
            sf.write(folder / f"{i}.wav", utterance(words, rng), RATE, subtype="PCM_16")
            lines.append(f"audio/{split}/{i}.wav\t{' '.join(words)}\n")
        (out_dir / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    return out_dir
