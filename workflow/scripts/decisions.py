from seminfo.stages.decisions import decisions_stage
from seminfo.workflow import run

run(snakemake, decisions_stage, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    summary=snakemake.input.profiles, source=snakemake.input.source, output=snakemake.output.data,
    options=snakemake.params.options, figure=snakemake.output.figure, dpi=snakemake.params.plots["dpi"],
    samples=snakemake.input.get("samples"))
