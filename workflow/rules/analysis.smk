# Aggregation into profiles.nc (merged into summary.nc by rule summarize) and figures; shared by every experiment
# kind.


rule aggregate:
    input:
        posterior_files,
    output:
        profiles=f"{RESULTS}/{{experiment}}/profiles.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/aggregate.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/aggregate.py"


rule plot_profiles:
    input:
        profiles=f"{RESULTS}/{{experiment}}/profiles.nc",
    output:
        report(
            expand(
                f"{RESULTS}/{{{{experiment}}}}/figures/{{name}}.png",
                name=["entropy", "entropy_rate", "rate_heatmap", "examples"],
            ),
            category="{experiment}",
            caption="../report/profiles.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/plot_profiles.log",
    params:
        plots=lambda w: spec(w.experiment)["plots"],
        numbers=report_numbers,
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/plots.py"


rule plot_partitions:
    input:
        profiles=f"{RESULTS}/{{experiment}}/profiles.nc",
    output:
        report(
            f"{RESULTS}/{{experiment}}/figures/partitions.png",
            category="{experiment}",
            caption="../report/partitions.rst",
        ),
    log:
        f"{RESULTS}/{{experiment}}/logs/plot_partitions.log",
    params:
        plots=lambda w: spec(w.experiment)["plots"],
        numbers=report_numbers,
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/plots.py"
