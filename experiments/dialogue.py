"""Dialogue report: held-out perplexity, distinct-1/2, sample conversations.

    heedful data chatterbot --out data/chatterbot
    heedful train --preset dialogue train.max_minutes=12 --run-dir runs/dialogue
    python experiments/dialogue.py runs/dialogue

Writes docs/dialogue.md and .json: on the test split (whole conversations held out),
perplexity of the reference responses (per subword, EOS included), and distinct-1/2 of the
responses under greedy search and under the run's sampling settings (nucleus); the same for
the reference responses themselves; then a few conversations through ``ChatSession``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from heedful.corpora import chatterbot_conversations
from heedful.data import load_split
from heedful.decoding.chat import ChatSession, distinct_n
from heedful.decoding.forced import force_decode
from heedful.decoding.translator import Translator

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONVERSATIONS = [
    ["Hello", "How are you?", "What is your name?", "Do you like music?"],
    ["What is AI?", "Are you intelligent?", "Can you learn?"],
    ["Tell me a joke", "That is not funny", "Tell me another one"],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--context-turns", type=int, default=2)
    args = ap.parse_args()
    translator = Translator.from_checkpoint(args.run)
    test = load_split(translator.config.data, "test")
    train = load_split(translator.config.data, "train")
    assert test is not None and train is not None
    tok = translator.tokenizer
    forced = force_decode(translator.model, tok.encode_src(test.src), tok.encode_tgt(test.tgt))
    ppl = math.exp(-sum(r.log_prob for r in forced) / sum(r.num_tokens for r in forced))
    greedy = [r.text for r in translator.translate(test.src, sample=False, beam_size=1,
                                                   no_repeat_ngram_size=0)]
    sampled = [r.text for r in translator.translate(test.src)]
    opts = translator.decode_options()
    report: dict[str, object] = {
        "run": args.run, "test_pairs": len(test.src), "train_pairs": len(train.src),
        "conversations_in_corpus": len(chatterbot_conversations()),
        "perplexity": round(ppl, 2),
        "sampling": {"top_p": opts.top_p, "temperature": opts.temperature,
                     "no_repeat_ngram_size": opts.no_repeat_ngram_size, "seed": opts.seed},
        "distinct": {
            name: {"distinct_1": round(distinct_n(texts, 1), 4),
                   "distinct_2": round(distinct_n(texts, 2), 4)}
            for name, texts in (("greedy", greedy), ("sampling", sampled),
                                ("reference", test.tgt))}}
    chats = []
    for turns in CONVERSATIONS:
        session = ChatSession(translator, args.context_turns)
        chats.append([{"you": t, "model": session.respond(t)[1]} for t in turns])
    report["conversations"] = chats
    DOCS.mkdir(exist_ok=True)
    (DOCS / "dialogue.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    d = report["distinct"]
    assert isinstance(d, dict)
    lines = [
        f"chatterbot-corpus (English): {len(train.src):,} training and {len(test.src):,} test "
        "context→response pairs (2 previous turns, `<sep>`-joined); whole conversations are "
        "held out. Model: `heedful train --preset dialogue` "
        f"(`python experiments/dialogue.py {args.run}`).", "",
        f"Test perplexity of the reference responses: **{report['perplexity']}** (per subword, "
        "EOS included).", "",
        "| responses | distinct-1 | distinct-2 |", "|---|---:|---:|"]
    for name, v in d.items():
        lines.append(f"| {name} | {v['distinct_1']:.3f} | {v['distinct_2']:.3f} |")
    lines += ["", f"Sampling: top-p {opts.top_p}, temperature {opts.temperature}, no repeated "
              f"{opts.no_repeat_ngram_size}-grams, seed {opts.seed}.", "",
              "Sample conversations (`heedful chat`, context of 2 turns):", ""]
    for chat in chats:
        for turn in chat:
            lines.append(f"> **you:** {turn['you']}  \n> **model:** {turn['model']}  ")
        lines.append("")
    (DOCS / "dialogue.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
