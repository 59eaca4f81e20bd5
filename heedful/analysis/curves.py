"""Training curves (``heedful plot``): the training loss and every dev metric of one or several
runs, read from their ``metrics.jsonl`` (no TensorBoard needed), by step or by training time.

``metrics.jsonl`` holds two kinds of record (:mod:`heedful.training.reporter` writes them):
a window's (``step``, ``train_loss``, ``tok_per_s``, ``lr``, ``grad_norm``, ``train_seconds``)
and a validation's (``step``, ``epoch``, ``dev_loss``, ``dev_ppl``, ``dev_bleu``,
``dev_chrf``, ``lr``, ``train_seconds``). A record a crash cut off is skipped (and counted);
when a resumed run logs a step again, its new figures replace the old ones from that step on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heedful.errors import DataError

METRICS_FILE = "metrics.jsonl"
X_KEYS = {"step": "step", "time": "train_seconds"}
"""``--x`` choices -> the record key on the x axis."""
X_LABELS = {"step": "update step", "time": "training time (minutes)"}


@dataclass
class RunCurves:
    """One run's curves: metric -> [(step, x), ...] points and their values."""

    run_dir: Path
    label: str
    points: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    """metric -> [(step, x, value)], in step order."""
    skipped: list[int] = field(default_factory=list)
    """Line numbers of records a crash cut off."""

    def add(self, step: int, x: float, metric: str, value: float) -> None:
        """Add a point; a step at or before the last one (a resumed run's repeat) first
        drops the points from that step on."""
        series = self.points.setdefault(metric, [])
        while series and series[-1][0] >= step:
            series.pop()
        series.append((step, x, value))


def read_curves(run_dir: str | Path, x: str = "step", label: str | None = None) -> RunCurves:
    """The curves in ``run_dir``'s ``metrics.jsonl``, with ``x`` (a key of :data:`X_KEYS`) on
    the x axis. Raises :class:`DataError`, naming the file and line, for a missing file or an
    unreadable record."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        what = "is not a directory" if not run_dir.is_dir() else f"has no {METRICS_FILE}"
        raise DataError(f"{run_dir} {what} (heedful plot reads a training run directory)")
    key = X_KEYS[x]
    curves = RunCurves(run_dir, label or run_dir.name or str(run_dir))
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = _parse(line, path, number)
            if record is None:
                curves.skipped.append(number)
                continue
            if key not in record:
                raise DataError(f"{path}:{number}: the record has no {key!r} (written by an "
                                "older heedful?); plot it with --x step")
            for metric, value in record.items():
                if _is_curve(metric) and isinstance(value, int | float):
                    curves.add(int(record["step"]), float(record[key]), metric, float(value))
    return curves


def _parse(line: str, path: Path, number: int) -> dict[str, Any] | None:
    """One record; None for a record a crash cut off (a ``{`` never closed)."""
    text = line.strip()
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        if text.startswith("{") and not text.endswith("}"):
            return None
        raise DataError(f"{path}:{number}: not a JSON record ({err.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise DataError(f"{path}:{number}: not a metrics record (an object with a 'step')")
    return record


def _is_curve(metric: str) -> bool:
    return metric == "train_loss" or metric.startswith("dev_")


def metrics_of(runs: list[RunCurves]) -> list[str]:
    """The panels: the training loss, then each dev metric in the order the runs name them."""
    names: list[str] = []
    for run in runs:
        names.extend(m for m in run.points if m not in names)
    return sorted(names, key=lambda m: m != "train_loss")  # stable: train_loss first


def plot_curves(runs: list[RunCurves], path: str | Path, x: str = "step") -> Path:
    """Draw one panel per metric (:func:`metrics_of`), one line per run, into ``path``."""
    from heedful.analysis.plots import pyplot, save_figure

    plt = pyplot()
    metrics = metrics_of(runs)
    if not metrics:
        raise DataError("no curves to draw: " + ", ".join(
            f"{r.run_dir / METRICS_FILE} holds no training or dev figures" for r in runs))
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=100,
                             squeeze=False)
    scale = 1 / 60 if x == "time" else 1.0  # seconds -> minutes
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for i, run in enumerate(runs):
            points = run.points.get(metric, [])
            if points:
                marker = "o" if metric.startswith("dev_") else None
                ax.plot([p[1] * scale for p in points], [p[2] for p in points],
                        color=f"C{i}", marker=marker, markersize=3, linewidth=1.4,
                        label=run.label)
        ax.set_title(metric.replace("_", " "), fontsize=10)
        ax.set_xlabel(X_LABELS[x], fontsize=9)
        if metric == "dev_ppl":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path)


def curves_json(runs: list[RunCurves], x: str) -> dict[str, Any]:
    """The plotted points, for ``heedful plot --json``."""
    return {"x": X_KEYS[x], "runs": [
        {"run_dir": str(r.run_dir), "label": r.label, "skipped_lines": r.skipped,
         "curves": {m: [[p[1], p[2]] for p in pts] for m, pts in r.points.items()}}
        for r in runs]}
