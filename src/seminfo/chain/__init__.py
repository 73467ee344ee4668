"""The paper's math, no files: noise schedules and Gaussian paths, the reverse chain and its sampler (guidance,
clipping, counter-based noise, the evaluator's precisions), the online Bayes posterior with its pruning,
Rao-Blackwellisation and one-vs-rest tracking, and the reduced-precision bias and its gate.

The lowest layer of the package (with ``seminfo.mixtures``): it imports nothing of seminfo outside itself.
"""
