from seminfo.stages.train import train_model
from seminfo.workflow import run

run(snakemake, train_model, spec=snakemake.params.spec, experiment=snakemake.wildcards.experiment,
    model_path=snakemake.output.model, work_dir=snakemake.params.work_dir)
