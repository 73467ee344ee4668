from seminfo.stages.convergence import convergence_stage
from seminfo.workflow import run

run(snakemake, convergence_stage, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    output=snakemake.output.data, options=snakemake.params.options, figure=snakemake.output.figure,
    dpi=snakemake.params.plots["dpi"], model_path=snakemake.input.get("model"))
