"""A REST service that trains feed-forward neural networks and serves their predictions."""

__version__ = "0.1.0"
