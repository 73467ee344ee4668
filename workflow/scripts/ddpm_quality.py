from seminfo.ddpm.quality import digits_quality
from seminfo.workflow import run

run(snakemake, digits_quality, summary=snakemake.input.profiles, samples=snakemake.input.samples,
    trajectories=snakemake.input.trajectories, output=snakemake.output[0])
