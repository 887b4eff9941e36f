"""T2Diff streaming recall: shared core (paths, config loading, data sets, the model, the CLI)."""

__version__ = "0.1.0"
