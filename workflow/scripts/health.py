from seminfo.stages.health import health_stage
from seminfo.workflow import run

run(snakemake, health_stage, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    profiles=snakemake.input.profiles, samples=snakemake.input.samples, output=snakemake.output[0],
    immse=snakemake.input.get("immse"), quality=snakemake.input.get("quality"))
