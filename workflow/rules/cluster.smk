# Cluster execution. The target rule does no work, so it never becomes a cluster job; the cheap CPU stages
# of an experiment are grouped into one job by workflow/profiles/slurm (groups:), and resources are set there.


localrules:
    all,
