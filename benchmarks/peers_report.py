"""What benchmarks/peers_compare.py and benchmarks/peers_decode.py share: where the peers'
harness lives and how a comparison is written out (docs/NAME.json + .md, table on stderr,
JSON on stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "peers"
PEERS = ("joey", "onmt")
MODELS = ("rnn", "transformer")


def write_report(name: str, header: str, table: list[str], report: dict[str, Any]) -> None:
    """docs/<name>.json (the report) and docs/<name>.md (header + table); prints both."""
    (ROOT / "docs" / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (ROOT / "docs" / f"{name}.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    print("\n".join(table), file=sys.stderr)
    print(json.dumps(report))
