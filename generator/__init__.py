"""Synthetic alignment-pretraining data generator.

The data flows templates -> generator -> filters -> shards; this package holds
the middle: configuration, prompt rendering, engines and build orchestration.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alignment-datagen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
