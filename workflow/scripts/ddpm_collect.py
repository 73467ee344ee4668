from seminfo.stages.network import collect
from seminfo.workflow import run

run(snakemake, collect, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    posteriors=list(snakemake.input.posteriors), samples=list(snakemake.input.samples),
    trajectories_out=snakemake.output.trajectories, samples_out=snakemake.output.samples)
