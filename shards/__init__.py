"""Shards: the Arrow format documents are written in, the manifest, and reading them back."""
