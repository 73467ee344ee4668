from seminfo.stages.network import sample_shard
from seminfo.workflow import run

run(snakemake, sample_shard, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    model_path=snakemake.input.model, shard=int(snakemake.wildcards.shard), output=snakemake.output[0])
