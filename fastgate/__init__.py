"""fastgate: a self-hosted API gateway with a compiled hot path."""

__version__ = "0.1.0"
