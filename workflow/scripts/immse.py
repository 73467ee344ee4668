from seminfo.stages.immse import immse_stage
from seminfo.workflow import run

run(snakemake, immse_stage, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    summary=snakemake.input.profiles, output=snakemake.output.data, options=snakemake.params.options,
    model_path=snakemake.input.get("model"), figure=snakemake.output.figure, dpi=snakemake.params.plots["dpi"],
    samples=snakemake.input.get("samples"))
