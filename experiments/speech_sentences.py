"""Listening to spoken verses in voices never heard, with and without attention.

    python experiments/speech_sentences.py [--minutes 30] [--threads 1] [--parallel]
        # -> docs/speech_sentences.json

Builds the corpus (``heedful data spoken-sentences --out data/spoken-sentences``: espeak-ng,
the test voices held out) if it is missing, trains the ``speech-sentences`` preset (and with
``--settings attention none``, also ``model.attention=none``) for the same wall-clock budget
each, then scores the 500 test utterances: WER, CER and exact match by length in words, and
the real-time factor of greedy decoding. A finished run is reused; delete
``runs/speech-sentences/NAME`` to train it again.
"""

from __future__ import annotations

import sys

from speech_digits import ROOT, Task, run_task

SENTENCES = Task(
    "speech_sentences", "speech-sentences", ROOT / "data" / "spoken-sentences",
    ("spoken-sentences",), {"attention": [], "none": ["model.attention=none"]},
    ("attention",), ROOT / "docs" / "speech_sentences.json", minutes=30.0,
    description=__doc__.split("\n\n")[0])

if __name__ == "__main__":
    sys.exit(run_task(SENTENCES))
