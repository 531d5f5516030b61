"""matscreen: high-throughput screening of perovskites, spinels and garnets."""

__version__ = "0.1.0"
