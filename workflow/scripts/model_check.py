from seminfo.stages.network import model_check
from seminfo.workflow import run

run(snakemake, model_check, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    output=snakemake.output[0])
