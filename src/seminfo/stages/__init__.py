"""One function per workflow rule: paths in, files out.

- ``shared``: the mixture stages (gmm_sample, gmm_posterior) and those every experiment shares (aggregate,
  summarize, plots), with the helpers the other stages use;
- ``network``: the stages of network models (model_check, sample_shard, shard_posterior, collect);
- ``train``: training the own model; ``health``: the run's health checks; ``precision``: the precision gate;
- the studies beyond the paper: ``immse``, ``decisions``, ``convergence`` (and ``network_convergence``), the
  speciation study (``convergence.speciation_stage``) and the guidance sweep (``guidance``), with
  ``studies_common``.
"""
