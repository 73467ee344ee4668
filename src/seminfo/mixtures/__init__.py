"""Exact Gaussian mixtures: the 1-D mixture (``gmm``) and the d-dimensional isotropic one (``highdim``), with their
exact posteriors and entropy curves. Beside ``seminfo.chain`` in the lowest layer.
"""
