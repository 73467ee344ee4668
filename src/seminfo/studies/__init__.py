"""Stage functions of the studies beyond the paper (workflow/rules/extras.smk): paths in, files out.

- ``immse_stage``: I(c; x_t) from forward-noised data by the I-MMSE identity (``seminfo.immse``), on the experiment's
  time grid, beside the trajectory estimate of summary.nc → immse.nc
- ``decisions_stage``: per-trajectory decision times, per-class medians and entropy-rate peaks with bootstrap
  intervals and their pairwise table (``seminfo.decisions``), and the speciation time (``seminfo.speciation``) →
  decisions.nc
- ``convergence_stage``: the online posterior of several samplers at several step counts against the exact curves
  (1-D mixtures, ``seminfo.convergence``) or against the finest step count (network models,
  ``seminfo.network_convergence``) → convergence.nc
- ``speciation_stage``: over the data dimension d, where the entropy rate of two classes at +-m (|m|^2 = d) peaks
  against the speciation time, and its width in rescaled time (``seminfo.speciation``) → speciation.nc
Each stage also draws its figure (``figure``: the png path) from the dataset it has just written. The guidance sweep
is ``seminfo.guidance_study``.
"""

from .common import is_pretrained, section_options, source_schedule
from .convergence_stage import convergence_stage, speciation_stage
from .decisions_stage import decisions_stage, replay_gmm_posterior
from .immse_stage import immse_stage

__all__ = ["section_options", "is_pretrained", "source_schedule", "immse_stage", "decisions_stage",
           "replay_gmm_posterior", "convergence_stage", "speciation_stage"]
