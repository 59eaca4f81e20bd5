"""The ``spoken-sentences`` corpus: English verses spoken by espeak-ng voices -> their words.

Built by ``heedful data spoken-sentences --out DIR`` from the bundled corpus's English verses
(its own train/dev/test splits, so no test verse is ever heard in training) and Debian's
``espeak-ng`` (``apt-get install espeak-ng``): every verse of 30-55 words (7-21 s of
speech, 11.5 s on average) is spoken by a voice (an accent and a voice variant), at a speed
of 140-190 words a minute and a pitch of 30-70, all drawn from the seed. **Test voices are
held out**: test uses two accents and three variants that no training or dev utterance has,
so the test error is that of a voice never heard.

The target is what can be heard: the verse lowercased, every run of characters other than
letters, digits and apostrophes turned into one space (``And God said, Let there be
light:`` -> ``and god said let there be light``).

Layout of ``DIR``::

    train.tsv dev.tsv test.tsv    audio/{split}/{index:06d}.wav<TAB>{words}, one per line
    audio/{train,dev,test}/       16-bit PCM mono WAV files at 16 kHz
    stats.json                    utterances, hours, seconds and voices per split
    README.md                     what the corpus is, how it was built, source and license
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from heedful.errors import CorpusBuildError

RATE = 16_000
SPLITS = ("train", "dev", "test")
WORDS = (30, 55)
"""Verses of this many words (inclusive): 10-20 s at the speeds below."""
SPEED = (140, 190)
PITCH = (30, 70)
TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m5", "f1", "f2", "f4")
TEST_ACCENTS = ("en-gb-scotland", "en-us-nyc")
TEST_VARIANTS = ("m7", "f3", "f5")
_UNHEARD = re.compile(r"[^a-z0-9']+")


def spoken_form(verse: str) -> str:
    """What a listener can write down: lowercase words, punctuation gone."""
    words = (w.strip("'") for w in _UNHEARD.sub(" ", verse.lower()).split())
    return " ".join(w for w in words if w)  # a quote's marks go, "god's" keeps its own


def voices_of(split: str) -> list[str]:
    """espeak-ng voice names (``accent+variant``) a split is spoken in."""
    accents, variants = ((TEST_ACCENTS, TEST_VARIANTS) if split == "test"
                         else (TRAIN_ACCENTS, TRAIN_VARIANTS))
    return [f"{a}+{v}" for a in accents for v in variants]


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise CorpusBuildError("spoken-sentences needs espeak-ng (Debian: apt-get install "
                               "espeak-ng)")
    return found


def speak(text: str, voice: str, speed: int, pitch: int, espeak: str | None = None
          ) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 samples at :data:`RATE`."""
    import soundfile as sf

    from heedful.audio.features import resample

    done = subprocess.run([espeak or _espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch),
                           "--stdout", text], capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise CorpusBuildError(f"spoken-sentences: espeak-ng -v {voice} failed: "
                               f"{done.stderr.decode(errors='replace').strip()}")
    samples, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    return resample(samples, rate, RATE)


def _verses(split: str) -> list[str]:
    from heedful.datasets import english_verses

    return [v for v in english_verses(split) if WORDS[0] <= len(v.split()) <= WORDS[1]]


def _write_split(out_dir: Path, split: str, verses: list[str], rng: np.random.Generator,
                 workers: int) -> tuple[list[float], dict[str, int]]:
    """Speak and save the split's utterances and its manifest; return their durations and
    how many each voice spoke."""
    import soundfile as sf

    folder = out_dir / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].wav"):
        stale.unlink()  # a previous, larger build's files would outlive its manifest
    voices = voices_of(split)
    # every random choice is drawn here, in order, before any work runs in parallel
    plan = [(verse, voices[int(rng.integers(len(voices)))], int(rng.integers(SPEED[0],
             SPEED[1] + 1)), int(rng.integers(PITCH[0], PITCH[1] + 1))) for verse in verses]
    espeak = _espeak()

    def one(index: int) -> float:
        verse, voice, speed, pitch = plan[index]
        audio = speak(verse, voice, speed, pitch, espeak)
        sf.write(folder / f"{index:06d}.wav", audio, RATE, subtype="PCM_16", format="WAV")
        return len(audio) / RATE

    with ThreadPoolExecutor(max(1, workers)) as pool:
        seconds = list(pool.map(one, range(len(plan))))
    lines = [f"audio/{split}/{i:06d}.wav\t{spoken_form(verse)}\n"
             for i, (verse, *_) in enumerate(plan)]
    (out_dir / f"{split}.tsv").write_bytes("".join(lines).encode("utf-8"))
    spoken: dict[str, int] = {}
    for _, voice, _, _ in plan:
        spoken[voice] = spoken.get(voice, 0) + 1
    return seconds, dict(sorted(spoken.items()))


def build_spoken_sentences(out_dir: Path, seed: int = 1, train: int = 5000, dev: int = 200,
                           test: int = 500, workers: int = 2) -> dict[str, object]:
    """Build the spoken-sentences corpus into ``out_dir`` (layout in the module docstring);
    return its statistics (also in stats.json and README.md)."""
    if min(seed, train, dev, test) < 0:
        raise CorpusBuildError("spoken-sentences: --seed, --train, --dev and --test must not "
                               "be negative")
    _espeak()
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"train": train, "dev": dev, "test": test}
    seconds, voices, available = {}, {}, {}
    for split in SPLITS:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))
        pool = _verses(split)
        available[split] = len(pool)
        chosen = sorted(rng.choice(len(pool), size=min(sizes[split], len(pool)),
                                   replace=False).tolist())
        seconds[split], voices[split] = _write_split(
            out_dir, split, [pool[i] for i in chosen], rng, workers)
    version = subprocess.run([_espeak(), "--version"], capture_output=True, text=True,
                             check=False).stdout.split("Data at")[0].strip()
    stats: dict[str, object] = {
        "corpus": "spoken-sentences", "seed": seed, "rate": RATE, "words": list(WORDS),
        "espeak": version, "verses_available": available,
        "utterances": {s: len(seconds[s]) for s in SPLITS},
        "hours": {s: round(sum(seconds[s]) / 3600, 3) for s in SPLITS},
        "seconds": {s: [round(float(np.min(seconds[s])), 1), round(float(np.mean(seconds[s])), 1),
                        round(float(np.max(seconds[s])), 1)] if seconds[s] else [0, 0, 0]
                    for s in SPLITS},
        "voices": voices}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(readme(stats), encoding="utf-8")
    return stats


def readme(stats: dict[str, object]) -> str:
    utterances, hours, seconds = stats["utterances"], stats["hours"], stats["seconds"]
    assert isinstance(utterances, dict) and isinstance(hours, dict) and isinstance(seconds, dict)
    rows = "\n".join(f"| {s} | {utterances[s]:,} | {hours[s]} | {seconds[s][0]} / "
                     f"{seconds[s][1]} / {seconds[s][2]} |" for s in SPLITS)
    return f"""\
# spoken-sentences: English verses spoken by synthetic voices

Recordings of English Bible verses ({WORDS[0]}-{WORDS[1]} words, 7-21 s) spoken by
espeak-ng, each paired with its words as heard: lowercase, punctuation removed. Long
utterances, where attention's path through the recording is plain to see.

## How it was built

    heedful data spoken-sentences --out DIR --seed {stats['seed']} \\
        --train {utterances['train']} --dev {utterances['dev']} --test {utterances['test']}

with {stats['espeak']}. Verses come from the bundled corpus's own splits (`bible-es-en`,
English side), so no dev or test verse is in training. Each verse is spoken by a voice drawn
from its split's voices, at {SPEED[0]}-{SPEED[1]} words a minute and pitch {PITCH[0]}-{PITCH[1]},
resampled from espeak-ng's 22,050 Hz to {RATE:,} Hz and written as 16-bit PCM WAV. The same
settings give byte-identical files.

## Voices: test is held out

Train and dev: accents {', '.join(TRAIN_ACCENTS)} x variants {', '.join(TRAIN_VARIANTS)}.
Test: accents {', '.join(TEST_ACCENTS)} x variants {', '.join(TEST_VARIANTS)}: no accent
and no variant of test is heard in training or dev.

## Splits

| split | utterances | hours | seconds (min / mean / max) |
|---|---:|---:|---|
{rows}

## Files

    train.tsv dev.tsv test.tsv    audio/{{split}}/{{index:06d}}.wav<TAB>words, one per line
    audio/{{train,dev,test}}/       16-bit PCM mono WAV, {RATE:,} Hz
    stats.json                    the numbers above, and utterances per voice

## Source and license

The verses: the King James Version (public domain), as bundled in heedful's `bible-es-en`
corpus (see its README). The voices: eSpeak NG (GPL-3.0-or-later); speech it produces is
not covered by its license. These recordings may be used without restriction.
"""
