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
from heedful.decoding.transcriber import Transcriber, Transcription
from heedful.decoding.translator import Translation, Translator
from heedful.errors import UserError
from heedful.nn.architectures import ARCHITECTURES, build_model
from heedful.nn.conv import ConvConfig, ConvSeq2Seq
from heedful.nn.rnn import RNNConfig, RNNSeq2Seq
from heedful.nn.seq2seq import Seq2SeqModel
from heedful.nn.transformer import TransformerConfig, TransformerSeq2Seq
from heedful.presets import get_preset
from heedful.quickstart import quickstart
from heedful.training.trainer import train

__version__ = "0.2.0"

Seq2Seq = RNNSeq2Seq
"""Another name of :class:`RNNSeq2Seq` (part of the documented API)."""

__all__ = [
    "ARCHITECTURES",
    "Config",
    "ConfigError",
    "ConvConfig",
    "ConvSeq2Seq",
    "DataError",
    "RNNConfig",
    "RNNSeq2Seq",
    "Seq2Seq",
    "Seq2SeqModel",
    "Transcriber",
    "Transcription",
    "TransformerConfig",
    "TransformerSeq2Seq",
    "Translation",
    "Translator",
    "UserError",
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
