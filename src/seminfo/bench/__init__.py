"""Benchmarks: ``python -m seminfo.bench`` (``core``), the random-weight networks of published models' sizes
(``networks``), FLOP counts (``python -m seminfo.bench.flops``) and the rounding noise of reduced precisions
(``python -m seminfo.bench.precision``).
"""
