"""heedful: sequence-to-sequence models with attention you can train, see, measure and serve."""

__version__ = "0.1.0"
