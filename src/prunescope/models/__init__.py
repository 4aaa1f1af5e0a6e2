"""Model preparation and per-family adapters."""

from prunescope.models.families import FAMILIES, Family, get_family

__all__ = ["FAMILIES", "Family", "get_family"]
