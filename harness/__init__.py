"""Quantum Trader staging harness.

The modules read as the pipeline: ``datasets`` (recorded bars) → ``feed`` → ``strategy`` →
``risk`` (the guard) → ``brokers`` (paper or testnet, over ``fills``) → ``journal`` →
``metrics`` → ``gates`` → ``report``; ``engine`` wires them for each mode.
"""

__version__ = "0.1.0"
