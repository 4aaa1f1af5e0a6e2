"""prunescope: what post-training pruning does to LLMs, reproducibly."""

__version__ = "0.1.0"
