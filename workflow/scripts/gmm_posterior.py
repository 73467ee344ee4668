from seminfo.stages.shared import gmm_posterior
from seminfo.workflow import run

run(snakemake, gmm_posterior, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    paths=snakemake.input[0], output=snakemake.output[0])
