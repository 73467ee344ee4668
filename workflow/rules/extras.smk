# Studies beyond the paper: I-MMSE cross-estimate, decision statistics with the speciation time, step convergence,
# and the speciation study over the data dimension. Each study is one job that writes its own file (immse.nc,
# decisions.nc, convergence.nc, speciation.nc) and draws its figure from it (one job rather than two keeps the default
# run short); the optional config sections `immse:`, `convergence:` and `speciation:` and the analysis keys are
# documented in the schema. Rule summarize then merges the profiles
# with the per-class and per-time results of the studies into summary.nc.


include: "extras_common.smk"


rule immse:
    input:
        unpack(immse_inputs),
    output:
        data=f"{RESULTS}/{{experiment}}/immse.nc",
        figure=report(
            f"{RESULTS}/{{experiment}}/figures/immse.png",
            category="{experiment}",
            caption="../report/immse.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/immse.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/immse.tsv"
    params:
        spec=lambda w: core_spec(w.experiment),
        options=lambda w: study_options(w.experiment, "immse"),
        plots=lambda w: spec(w.experiment)["plots"],
    threads: lambda w: gpu_job_threads(w) if spec(w.experiment)["kind"] == "ddpm" else 1
    resources:
        gpu=lambda w: int(spec(w.experiment)["kind"] == "ddpm"),
    wildcard_constraints:
        experiment="|".join(immse_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/immse.py"


rule decisions:
    input:
        unpack(decisions_inputs),
    output:
        data=f"{RESULTS}/{{experiment}}/decisions.nc",
        figure=report(
            f"{RESULTS}/{{experiment}}/figures/decisions.png",
            category="{experiment}",
            caption="../report/decisions.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/decisions.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
        options=lambda w: decision_options(w.experiment),
        plots=lambda w: spec(w.experiment)["plots"],
        numbers=report_numbers,
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/decisions.py"


rule summarize:
    input:
        unpack(summary_inputs),
    output:
        summary=f"{RESULTS}/{{experiment}}/summary.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/summarize.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/summarize.py"


rule convergence:
    input:
        unpack(convergence_inputs),
    output:
        data=f"{RESULTS}/{{experiment}}/convergence.nc",
        figure=report(
            f"{RESULTS}/{{experiment}}/figures/convergence.png",
            category="{experiment}",
            caption="../report/convergence.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/convergence.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/convergence.tsv"
    params:
        spec=lambda w: core_spec(w.experiment),
        options=lambda w: study_options(w.experiment, "convergence"),
        plots=lambda w: spec(w.experiment)["plots"],
    threads: lambda w: gpu_job_threads(w) if spec(w.experiment)["kind"] == "ddpm" else 1
    resources:
        gpu=lambda w: int(spec(w.experiment)["kind"] == "ddpm"),
    wildcard_constraints:
        experiment="|".join(convergence_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/convergence.py"


rule speciation:
    output:
        data=f"{RESULTS}/{{experiment}}/speciation.nc",
        figure=report(
            f"{RESULTS}/{{experiment}}/figures/speciation.png",
            category="{experiment}",
            caption="../report/speciation.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/speciation.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/speciation.tsv"
    params:
        spec=lambda w: core_spec(w.experiment),
        options=lambda w: study_options(w.experiment, "speciation"),
        plots=lambda w: spec(w.experiment)["plots"],
    wildcard_constraints:
        experiment="|".join(speciation_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/speciation.py"


rule guidance:
    input:
        model=model_file,
    output:
        data=f"{RESULTS}/{{experiment}}/guidance.nc",
        figure=report(
            f"{RESULTS}/{{experiment}}/figures/guidance.png",
            category="{experiment}",
            caption="../report/guidance.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/guidance.log",
    benchmark:
        f"{RESULTS}/{{experiment}}/benchmarks/guidance.tsv"
    params:
        spec=lambda w: analysis_spec(w.experiment),
        options=lambda w: study_options(w.experiment, "guidance_study"),
        plots=lambda w: spec(w.experiment)["plots"],
    # Every core (or its share under --resources gpu=N): in the default run the sweep is the last job on the critical
    # path (training, sampling, the sweep), and alone on one thread it left the other core idle.
    threads: gpu_job_threads
    resources:
        gpu=1,
    wildcard_constraints:
        experiment="|".join(guidance_experiments()) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/guidance.py"
