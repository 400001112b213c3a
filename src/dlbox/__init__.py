"""dlbox: deep-learning environments as versioned, reproducible artifacts."""

__version__ = "0.1.0"
