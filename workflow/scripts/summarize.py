from seminfo.stages.shared import summarize
from seminfo.workflow import run

studies = {name: path for name, path in snakemake.input.items() if name not in ("profiles", "health")}
run(snakemake, summarize, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    profiles=snakemake.input.profiles, output=snakemake.output.summary, studies=studies,
    health=snakemake.input.get("health"))
