"""seminfo: measure when a diffusion model makes its semantic decisions.

The online Bayesian class posterior along reverse trajectories (Handke et al. 2025), its entropy profiles,
rates and binary decisions, on exact Gaussian mixtures and on trained DDPMs.
"""

from .io import package_version

__version__ = package_version()
