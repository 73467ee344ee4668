from seminfo.stages.shared import aggregate
from seminfo.workflow import run

run(snakemake, aggregate, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    posteriors=list(snakemake.input), summary=snakemake.output.profiles)
