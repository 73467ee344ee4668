# seminfo: when does a diffusion model make its semantic decisions?
# The Snakefile only wires; the rules live in workflow/rules, the math in src/seminfo.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/gmm.smk"
include: "workflow/rules/ddpm.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/extras.smk"
include: "workflow/rules/cluster.smk"


rule all:
    input:
        all_targets(),
    default_target: True
