"""heedful: sequence-to-sequence models with attention you can train, see, measure and serve.

The Python API mirrors the command line::

    from heedful import load_config, train, Translator, score_corpus
    cfg = load_config("configs/tiny.yaml", ["train.max_steps=10"])
    train(cfg, "runs/tiny")                       # heedful train
    tr = Translator.from_checkpoint("runs/tiny")  # heedful translate / attention
    tr.translate(["Y dijo Dios: Sea la luz."], beam_size=5)
"""

from heedful.analysis.metrics import score_corpus
from heedful.analysis.plots import plot_attention
from heedful.checkpoint import export_run
from heedful.config import Config, ConfigError, load_config
from heedful.data import DataError, read_jsonl, read_parallel, read_tsv
from heedful.decoding.translator import Translation, Translator
from heedful.nn.architectures import Seq2Seq, build_model
from heedful.presets import get_preset
from heedful.quickstart import quickstart
from heedful.training.trainer import train

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "Seq2Seq",
    "Translation",
    "Translator",
    "build_model",
    "export_run",
    "get_preset",
    "load_config",
    "plot_attention",
    "quickstart",
    "read_jsonl",
    "read_parallel",
    "read_tsv",
    "score_corpus",
    "train",
]
