from seminfo.stages.shared import plots
from seminfo.workflow import run

run(snakemake, plots, summary=snakemake.input.profiles, outputs=list(snakemake.output),
    samples=snakemake.input.get("samples"), dpi=snakemake.params.plots["dpi"],
    time_axis=snakemake.params.plots.get("time_axis"))
