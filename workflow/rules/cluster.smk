# Cluster execution. The target rule does no work and summarize only merges small files, so neither becomes a
# cluster job, nor does model_download (it needs the network, which the submit host has and compute nodes often
# lack); the cheap CPU stages of an experiment are grouped into one job by workflow/profiles/slurm
# (groups:), and resources are set there.


localrules:
    all,
    summarize,
    model_download,
