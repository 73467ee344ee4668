# DDPM experiments: train a class-conditional network (own model) or check a pretrained one (model_check; one named
# by its hub id is first fetched by model_download, a local rule: compute nodes often have no network), sample
# trajectories in shards with the per-step Bayes increments, turn them into posteriors, collect per-trajectory
# and sample datasets, and check the run's health (health.json, merged into summary.nc).


rule ddpm_train:
    output:
        model=f"{RESULTS}/{{experiment}}/model/model.safetensors",
        meta=f"{RESULTS}/{{experiment}}/model/model.json",
    log:
        f"{RESULTS}/{{experiment}}/logs/ddpm_train.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/ddpm_train.tsv"
    params:
        spec=lambda w: train_spec(w.experiment),
        work_dir=lambda w: f"{RESULTS}/{w.experiment}/model/work",
    threads: gpu_job_threads
    resources:
        gpu=1,
    wildcard_constraints:
        experiment="|".join(own_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/ddpm_train.py"


rule model_download:
    output:
        f"{MODELS_DIR}/{{download}}.download.json",
    log:
        f"{MODELS_DIR}/{{download}}.download.log",
    params:
        download=lambda w: HUB_DOWNLOADS[w.download],
        cache_dir=f"{MODELS_DIR}/.cache",
    wildcard_constraints:
        download="|".join(re.escape(key) for key in HUB_DOWNLOADS) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/model_download.py"


rule model_check:
    input:
        model_folder_files,
    output:
        f"{RESULTS}/{{experiment}}/model/adapter.json",
    log:
        f"{RESULTS}/{{experiment}}/logs/model_check.log",
    params:
        spec=lambda w: core_spec(w.experiment),
        files=model_folder_stat,
    resources:
        gpu=1,
    wildcard_constraints:
        experiment="|".join(pretrained_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/model_check.py"


rule ddpm_sample:
    input:
        model=model_file,
    output:
        f"{RESULTS}/{{experiment}}/shards/sample_{{shard}}.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/ddpm_sample_{{shard}}.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/ddpm_sample_{{shard}}.tsv"
    params:
        spec=lambda w: core_spec(w.experiment),
    threads: gpu_job_threads
    resources:
        gpu=1,
    wildcard_constraints:
        experiment="|".join(experiments_of("ddpm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/ddpm_sample.py"


rule ddpm_posterior:
    input:
        f"{RESULTS}/{{experiment}}/shards/sample_{{shard}}.nc",
    output:
        f"{RESULTS}/{{experiment}}/shards/posterior_{{shard}}.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/ddpm_posterior_{{shard}}.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    wildcard_constraints:
        experiment="|".join(experiments_of("ddpm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/ddpm_posterior.py"


rule ddpm_collect:
    input:
        posteriors=lambda w: shard_files(w.experiment, "posterior"),
        samples=lambda w: shard_files(w.experiment, "sample"),
    output:
        trajectories=f"{RESULTS}/{{experiment}}/trajectories.nc",
        samples=f"{RESULTS}/{{experiment}}/samples.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/ddpm_collect.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    wildcard_constraints:
        experiment="|".join(experiments_of("ddpm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/ddpm_collect.py"


rule plot_images:
    input:
        profiles=f"{RESULTS}/{{experiment}}/profiles.nc",
        samples=f"{RESULTS}/{{experiment}}/samples.nc",
    output:
        report(
            expand(f"{RESULTS}/{{{{experiment}}}}/figures/{{name}}.png", name=["filmstrip", "samples"]),
            category="{experiment}",
            caption="../report/images.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/plot_images.log",
    params:
        plots=lambda w: spec(w.experiment)["plots"],
    wildcard_constraints:
        experiment="|".join(experiments_of("ddpm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/plots.py"


rule ddpm_quality:
    input:
        profiles=f"{RESULTS}/{{experiment}}/profiles.nc",
        samples=f"{RESULTS}/{{experiment}}/samples.nc",
        trajectories=f"{RESULTS}/{{experiment}}/trajectories.nc",
    output:
        f"{RESULTS}/{{experiment}}/quality.json",
    log:
        f"{RESULTS}/{{experiment}}/logs/ddpm_quality.log",
    wildcard_constraints:
        experiment="|".join(digits_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/ddpm_quality.py"


rule health:
    input:
        unpack(health_inputs),
    output:
        report(
            f"{RESULTS}/{{experiment}}/health.json",
            category="{experiment}",
            caption="../report/health.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/health.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    wildcard_constraints:
        experiment="|".join(experiments_of("ddpm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/health.py"
