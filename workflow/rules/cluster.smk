# Cluster execution. The target rule does no work and summarize only merges small files, so neither becomes a
# cluster job; the cheap CPU stages of an experiment are grouped into one job by workflow/profiles/slurm
# (groups:), and resources are set there.


localrules:
    all,
    summarize,
