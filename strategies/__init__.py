"""Shipped strategies (their names and parameters are part of the CLI contract, DESIGN 3.10)."""
