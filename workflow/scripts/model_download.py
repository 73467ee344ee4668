from seminfo.models.hub import download, experiments_of
from seminfo.workflow import run

d = snakemake.params.download  # repo_id, revision, sources, folder and record (= this rule's output)
run(snakemake, download, **d, cache_dir=snakemake.params.cache_dir,
    experiments=experiments_of(snakemake.config, d["repo_id"], d["revision"]))
