from seminfo.stages.guidance import guidance_stage
from seminfo.workflow import run

run(snakemake, guidance_stage, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    model_path=snakemake.input.model, output=snakemake.output.data, options=snakemake.params.options,
    figure=snakemake.output.figure, dpi=snakemake.params.plots["dpi"])
