from seminfo.stages.network import shard_posterior
from seminfo.workflow import run

run(snakemake, shard_posterior, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    sample=snakemake.input[0], output=snakemake.output[0])
