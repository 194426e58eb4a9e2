"""Filters: pipeline stages that clean, deduplicate and (later) score documents."""
