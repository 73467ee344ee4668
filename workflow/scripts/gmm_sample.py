from seminfo.stages.shared import gmm_sample
from seminfo.workflow import run

run(snakemake, gmm_sample, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    output=snakemake.output[0])
