"""The ``spoken-digits`` corpus: recordings of spoken digit strings -> the digits said.

Built by ``heedful data spoken-digits --from DIR --out DIR`` from real speech: the Free
Spoken Digit Dataset (FSDD: 3,000 recordings of single English digits, 6 speakers x 10
digits x 50 takes, 8 kHz; CC BY-SA 4.0). ``--from`` is a clone of its repository (or its
``recordings/`` folder). Each utterance joins 1 to ``max_length`` recordings with short
random silences; the target is the digits said, separated by spaces (``4 0 7``), so WER
counts digits.

Splits keep speakers and takes apart: **test** is every recording of speaker ``theo``, who
is never heard in training; **dev** takes 0-4 of the other five speakers; **train** their
takes 5-49. Dev and test have the same number of utterances of every length, so errors can
be reported per length. The same seed gives byte-identical files.

Layout of ``DIR``::

    train.tsv dev.tsv test.tsv    audio/{split}/{index:06d}.wav<TAB>{digits}, one per line
    audio/{train,dev,test}/       16-bit PCM mono WAV files at 8 kHz
    stats.json                    utterances, recordings and seconds per split
    README.md                     what the corpus is, how it was built, source and license
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from heedful.errors import CorpusBuildError

RATE = 8000
TEST_SPEAKER = "theo"
DEV_TAKES = range(0, 5)
SILENCE = (0.05, 0.30)  # seconds between digits, uniform
EDGE = (0.10, 0.25)  # seconds before the first and after the last digit
SPLITS = ("train", "dev", "test")
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def find_recordings(source: Path) -> list[tuple[int, str, int, Path]]:
    """(digit, speaker, take, path) of every FSDD recording in ``source`` (a clone of the
    repository, or its recordings/ folder), sorted by file name."""
    folder = source / "recordings" if (source / "recordings").is_dir() else source
    if not folder.is_dir():
        raise CorpusBuildError(f"spoken-digits: {source} is not a folder; point --from at a "
                               "clone of https://github.com/Jakobovski/free-spoken-digit-dataset")
    found = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append((int(match[1]), match[2], int(match[3]), path))
    if not found:
        raise CorpusBuildError(f"spoken-digits: no recordings named DIGIT_SPEAKER_TAKE.wav in "
                               f"{folder} (is --from a clone of the Free Spoken Digit Dataset?)")
    return found


def split_pools(recordings: list[tuple[int, str, int, Path]]
                ) -> dict[str, list[tuple[int, Path]]]:
    """(digit, path) pools of each split: test = the held-out speaker, dev = the others'
    takes 0-4, train = their takes 5 and later."""
    pools: dict[str, list[tuple[int, Path]]] = {split: [] for split in SPLITS}
    for digit, speaker, take, path in recordings:
        split = ("test" if speaker == TEST_SPEAKER
                 else "dev" if take in DEV_TAKES else "train")
        pools[split].append((digit, path))
    return pools


def _read(path: Path) -> np.ndarray:
    """A recording as float32 at :data:`RATE`."""
    from heedful.audio.features import read_wav, resample

    samples, rate = read_wav(path)
    return resample(samples, rate, RATE)


def _lengths(rng: np.random.Generator, max_length: int, count: int | None,
             per_length: int | None) -> np.ndarray:
    if per_length is not None:
        return np.repeat(np.arange(1, max_length + 1), per_length)
    return rng.integers(1, max_length + 1, size=count or 0)


def _write_split(out_dir: Path, split: str, lengths: np.ndarray,
                 pool: list[tuple[int, Path]], rng: np.random.Generator) -> list[float]:
    """Join and save the split's utterances and its manifest; return their durations."""
    import soundfile as sf

    folder = out_dir / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].wav"):
        stale.unlink()  # a previous, larger build's files would outlive its manifest
    by_digit = [[p for d, p in pool if d == digit] for digit in range(10)]
    cache: dict[Path, np.ndarray] = {}
    lines, seconds = [], []
    for index, length in enumerate(lengths):
        digits = rng.integers(0, 10, size=int(length))
        parts = [np.zeros(int(rng.uniform(*EDGE) * RATE), np.float32)]
        for n, digit in enumerate(digits):
            choices = by_digit[int(digit)]
            path = choices[int(rng.integers(0, len(choices)))]
            if path not in cache:
                cache[path] = _read(path)
            parts.append(cache[path])
            gap = EDGE if n == len(digits) - 1 else SILENCE
            parts.append(np.zeros(int(rng.uniform(*gap) * RATE), np.float32))
        audio = np.clip(np.concatenate(parts), -1.0, 1.0)
        name = f"audio/{split}/{index:06d}.wav"
        sf.write(out_dir / name, audio, RATE, subtype="PCM_16", format="WAV")
        lines.append(f"{name}\t{' '.join(str(int(d)) for d in digits)}\n")
        seconds.append(len(audio) / RATE)
    (out_dir / f"{split}.tsv").write_bytes("".join(lines).encode("utf-8"))
    return seconds


def build_spoken_digits(source: Path, out_dir: Path, seed: int = 1, train: int = 4000,
                        dev_per_length: int = 20, test_per_length: int = 50,
                        max_length: int = 10) -> dict[str, object]:
    """Build the spoken-digits corpus from the FSDD at ``source`` into ``out_dir`` (layout
    in the module docstring); return its statistics (also in stats.json and README.md)."""
    if min(seed, train, dev_per_length, test_per_length) < 0 or max_length < 1:
        raise CorpusBuildError("spoken-digits: --seed, --train, --dev-per-length and "
                               "--test-per-length must not be negative, --max-length >= 1")
    pools = split_pools(find_recordings(source))
    for split, pool in pools.items():
        missing = sorted(set(range(10)) - {d for d, _ in pool})
        if missing:
            raise CorpusBuildError(f"spoken-digits: the {split} split has no recording of "
                                   f"digit(s) {missing} in {source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"train": (train, None), "dev": (None, dev_per_length),
             "test": (None, test_per_length)}
    seconds = {}
    for split in SPLITS:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))
        lengths = _lengths(rng, max_length, *sizes[split])
        seconds[split] = _write_split(out_dir, split, lengths, pools[split], rng)
    stats: dict[str, object] = {
        "corpus": "spoken-digits", "seed": seed, "rate": RATE, "max_length": max_length,
        "utterances": {s: len(seconds[s]) for s in SPLITS},
        "per_length": {"dev": dev_per_length, "test": test_per_length},
        "recordings": {s: len(pools[s]) for s in SPLITS},
        "hours": {s: round(sum(seconds[s]) / 3600, 3) for s in SPLITS},
        "mean_seconds": {s: round(float(np.mean(seconds[s])), 2) if seconds[s] else 0.0
                         for s in SPLITS},
        "test_speaker": TEST_SPEAKER}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(README.format(**_readme_fields(stats)),
                                       encoding="utf-8")
    return stats


def _readme_fields(stats: dict[str, object]) -> dict[str, object]:
    fields: dict[str, object] = {k: stats[k] for k in ("seed", "max_length", "test_speaker")}
    for key in ("utterances", "recordings", "hours", "mean_seconds"):
        table = stats[key]
        assert isinstance(table, dict)
        fields.update({f"{key}_{s}": table[s] for s in SPLITS})
    per_length = stats["per_length"]
    assert isinstance(per_length, dict)
    fields.update(dev_per_length=per_length["dev"], test_per_length=per_length["test"])
    return fields


README = """\
# spoken-digits: spoken digit strings

Recordings of 1 to {max_length} spoken English digits in a row, each paired with the digits
said, separated by spaces (`4 0 7`): speech -> text with outputs of varying length.

## How it was built

    heedful data spoken-digits --from FSDD --out DIR --seed {seed} \\
        --train {utterances_train} --dev-per-length {dev_per_length} \\
        --test-per-length {test_per_length} --max-length {max_length}

from the Free Spoken Digit Dataset (FSDD): 3,000 recordings of single digits, 6 speakers x
10 digits x 50 takes, 8 kHz mono. Each utterance draws its digits uniformly and, for each,
a random recording of that digit from the split's pool; the recordings are joined with
silences of 0.05-0.30 s between digits and 0.10-0.25 s at both ends, and written as 16-bit
PCM WAV at 8 kHz. The same settings give byte-identical files.

## Splits

| split | utterances | recordings | hours | mean seconds |
|---|---:|---:|---:|---:|
| train | {utterances_train:,} | {recordings_train:,} | {hours_train} | {mean_seconds_train} |
| dev | {utterances_dev:,} | {recordings_dev:,} | {hours_dev} | {mean_seconds_dev} |
| test | {utterances_test:,} | {recordings_test:,} | {hours_test} | {mean_seconds_test} |

Train joins takes 5-49 of the five speakers other than `{test_speaker}`, dev their takes
0-4, test every take of `{test_speaker}`.
The test speaker is never heard in training or dev. Dev and test have exactly
{dev_per_length} and {test_per_length} utterances of each length 1..{max_length}.

## Files

    train.tsv dev.tsv test.tsv    audio/{{split}}/{{index:06d}}.wav<TAB>digits, one per line
    audio/{{train,dev,test}}/       16-bit PCM mono WAV, 8 kHz
    stats.json                    the numbers above

## Source and license

Free Spoken Digit Dataset (Zohar Jackson and contributors),
https://github.com/Jakobovski/free-spoken-digit-dataset, licensed under the Creative Commons
Attribution-ShareAlike 4.0 International license (CC BY-SA 4.0). These recordings are derived
from it (joined, with silences added) and are distributed under the same license, with
attribution to its authors as above.
"""
