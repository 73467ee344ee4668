# Gaussian-mixture experiments: exact kernels, trajectories, and the online posterior along them.


rule gmm_sample:
    output:
        temp(f"{RESULTS}/{{experiment}}/paths.nc"),
    log:
        f"{RESULTS}/{{experiment}}/logs/gmm_sample.log",
    params:
        spec=lambda w: core_spec(w.experiment),
    wildcard_constraints:
        experiment="|".join(experiments_of("gmm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/gmm_sample.py"


rule gmm_posterior:
    input:
        f"{RESULTS}/{{experiment}}/paths.nc",
    output:
        f"{RESULTS}/{{experiment}}/posterior.nc",
    log:
        f"{RESULTS}/{{experiment}}/logs/gmm_posterior.log",
    params:
        spec=lambda w: analysis_spec(w.experiment),
    wildcard_constraints:
        experiment="|".join(experiments_of("gmm")) or "^$",
    conda:
        "../envs/seminfo.yaml"
    script:
        "../scripts/gmm_posterior.py"
