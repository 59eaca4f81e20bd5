"""Line accounting at scale: translate, score, align and transcribe on 10,000 mixed lines each.

    python benchmarks/line_accounting.py [--lines 10000] [--bad 25]   # -> JSON on stdout

Each command runs as ``python -m heedful`` on the shipped models (``bible-es-en`` for text,
``digits-ocr`` for images) with a generated input of ``--lines`` lines: empty, blank,
zero-width, long, emoji, tab-holding lines (for ``transcribe``: sample images, missing files,
directories, files that are not images, empty lines), ``--bad`` of them not UTF-8. Checked,
per command:

* with ``--skip-bad-lines``: exit status 0, exactly one output line per input line, an empty
  output line for every bad, empty or unreadable input, one warning per bad line;
* without it: exit status 2, an error naming the first bad line, and the output of every
  line before it written (and nothing after).

The tests run the same checks on fewer lines (``tests/test_robustness.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "heedful" / "pretrained" / "digits-ocr" / "samples"
TEXT = ["", "   ", "Y dijo Dios.", "\u200b", "%%%%", "ñ" * 300, "a\tb", "🙂🙂",
        "Y dijo Dios: Sea la luz; y fué la luz.", "palabra " * 300]
NOT_UTF8 = [b"\x80abc", b"se\xc3", "señal".encode("latin-1")]


def heedful(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "heedful", *argv], input=stdin, cwd=ROOT,
                          capture_output=True)
    return done.returncode, done.stderr.decode("utf-8", "replace"), time.perf_counter() - start


def text_lines(rng: random.Random, count: int, bad: int) -> tuple[list[bytes], set[int]]:
    lines = [rng.choice(TEXT).encode() for _ in range(count)]
    wrong = set(rng.sample(range(count), bad))
    for i in wrong:
        lines[i] = rng.choice(NOT_UTF8)
    return lines, wrong


def image_lines(rng: random.Random, count: int, bad: int, work: Path
                ) -> tuple[list[bytes], set[int], set[int], int]:
    """Paths for transcribe: (lines, not-UTF-8 lines, lines that must give an empty output,
    the first line that is not UTF-8 or names a file that cannot be read)."""
    junk = work / "notes.txt"
    junk.write_text("not an image\n", encoding="utf-8")
    samples = [str(p).encode() for p in sorted(SAMPLES.glob("*.png"))]
    unreadable = [str(work / "missing.png").encode(), str(work).encode(), str(junk).encode()]
    lines, empty, unread = [], set(), set()
    for i in range(count):
        kind = rng.random()
        if kind < 0.7:
            lines.append(rng.choice(samples))
        elif kind < 0.85:
            lines.append(rng.choice([b"", b"   "]))
            empty.add(i)
        else:
            lines.append(rng.choice(unreadable))
            empty.add(i)
            unread.add(i)
    wrong = set(rng.sample(range(count), bad))
    for i in wrong:
        lines[i] = rng.choice(NOT_UTF8)
        empty.add(i)
        unread.discard(i)
    return lines, wrong, empty, min(wrong | unread)


def same_line(a: str, b: str) -> bool:
    """The same output line, but for float32 rounding in scores: a pair's score is summed in
    a batch, and the strict run's last batch holds fewer pairs (-2507.3357 vs -2507.3354)."""
    if a == b:
        return True
    try:
        x, y = [float(v) for v in a.split("\t")], [float(v) for v in b.split("\t")]
    except ValueError:
        return False
    return len(x) == len(y) and all(abs(u - v) <= 1e-4 * max(abs(u), abs(v), 1.0)
                                    for u, v in zip(x, y, strict=True))


def check(name: str, argv: list[str], count: int, wrong: set[int], empty: set[int],
          out: Path, stdin: bytes | None = None, first: int | None = None) -> dict[str, Any]:
    """Run ``argv`` with and without --skip-bad-lines and check the promises; ``first``: the
    line a strict run stops at (default: the first that is not UTF-8)."""
    code, err, seconds = heedful([*argv, "--skip-bad-lines"], stdin)
    produced = out.read_text(encoding="utf-8").split("\n") if out.exists() else []
    result: dict[str, Any] = {
        "lines": count, "not_utf8": len(wrong), "exit_skipping": code,
        "output_lines": len(produced) - 1, "seconds": round(seconds, 1),
        "warnings": err.count("heedful: warning:"),
        "empty_where_due": sum(produced[i] == "" for i in empty if i < len(produced)),
        "empty_due": len(empty)}
    first = min(wrong) if first is None else first
    code, err, _ = heedful(argv, stdin)
    after = out.read_text(encoding="utf-8").split("\n") if out.exists() else []
    result["exit_strict"] = code
    result["strict_error_names_line"] = f"line {first + 1}" in err and "heedful: error:" in err
    result["strict_output_is_the_lines_before"] = (
        len(after) == first + 1 and after[-1] == ""
        and all(same_line(a, b) for a, b in zip(after, produced[:first], strict=False)))
    if not result["strict_output_is_the_lines_before"]:
        differ = [i for i, (a, b) in enumerate(zip(after, produced[:first], strict=False))
                  if not same_line(a, b)]
        result["strict_differs"] = {"strict_lines": len(after) - 1, "expected": first,
                                    "first_differing": [(i, produced[i][:80], after[i][:80])
                                                        for i in differ[:3]]}
    result["ok"] = (result["exit_skipping"] == 0 and result["output_lines"] == count
                    and result["warnings"] >= len(wrong)
                    and result["empty_where_due"] == len(empty) and code == 2
                    and result["strict_error_names_line"]
                    and result["strict_output_is_the_lines_before"])
    print(f"[line-accounting] {name}: {json.dumps(result)}", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--bad", type=int, default=25)
    args = parser.parse_args()
    rng = random.Random(0)
    report: dict[str, Any] = {"command": "python benchmarks/line_accounting.py "
                              + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = work / "out.txt"
        lines, wrong = text_lines(rng, args.lines, args.bad)
        src = work / "in.es"
        src.write_bytes(b"\n".join(lines) + b"\n")
        blank = {i for i, line in enumerate(lines) if i in wrong or not line.decode().strip()}
        report["translate"] = check("translate", [
            "translate", "bible-es-en", "-i", str(src), "-o", str(out), "--beam-size", "1",
            "--batch-size", "256"], args.lines, wrong, blank, out)
        tgt_lines, tgt_wrong = text_lines(rng, args.lines, args.bad)
        tgt = work / "in.en"
        tgt.write_bytes(b"\n".join(tgt_lines) + b"\n")
        pair_wrong = wrong | tgt_wrong
        pair_blank = blank | {i for i, line in enumerate(tgt_lines)
                              if i in tgt_wrong or not line.decode().strip()}
        for command in ("score", "align"):
            report[command] = check(command, [
                command, "bible-es-en", "--src", str(src), "--tgt", str(tgt), "-o", str(out)],
                args.lines, pair_wrong, pair_blank, out)
        paths, path_wrong, path_empty, stop = image_lines(rng, args.lines, args.bad, work)
        listing = work / "images.txt"
        listing.write_bytes(b"\n".join(paths) + b"\n")
        report["transcribe"] = check("transcribe", [
            "transcribe", "digits-ocr", "-i", str(listing), "-o", str(out)],
            args.lines, path_wrong, path_empty, out, first=stop)
    report["all_ok"] = all(report[c]["ok"] for c in ("translate", "score", "align",
                                                     "transcribe"))
    print(json.dumps(report, indent=1))
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
