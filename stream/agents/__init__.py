"""Thin Faust agents and pages: decode, call the pure parts, publish."""
