# Helpers of the study rules (extras.smk): their options, inputs and targets.

STUDY_SCHEMA = load_schema(SCHEMA)


def study_options(experiment, section):
    """An optional study section of an experiment with its schema defaults (also when the section is absent)."""
    return plan.study_options(spec(experiment), section, STUDY_SCHEMA)


def decision_options(experiment):
    return plan.decision_options(spec(experiment))


def immse_skipped(name):
    """Why an experiment's I-MMSE study (on by default) cannot run, or None (seminfo.plan.immse_skipped)."""
    return plan.immse_skipped(spec(name))


def immse_experiments():
    """Experiments whose immse study is on and can run (``immse_skipped``)."""
    return [name for name in EXPERIMENTS if plan.immse_runs(spec(name), STUDY_SCHEMA)]


for _name in config.get("run", EXPERIMENTS):
    if study_options(_name, "immse")["enable"] and immse_skipped(_name):
        sys.stderr.write(f"seminfo: experiments.{_name}: I-MMSE study skipped: {immse_skipped(_name)}\n")


def convergence_experiments():
    """1-D mixtures (on unless disabled; mixture.dim experiments are skipped, their gmm_sample log says so) and
    network models whose config has a convergence: section (S up to 1000 costs many network evaluations)."""
    mixtures = [name for name in experiments_of("gmm")
                if "dim" not in spec(name)["mixture"] and study_options(name, "convergence")["enable"]]
    networks = [name for name in experiments_of("ddpm")
                if "convergence" in spec(name) and study_options(name, "convergence")["enable"]]
    return mixtures + networks


def convergence_inputs(w):
    return {"model": model_file(w)} if spec(w.experiment)["kind"] == "ddpm" else {}


def speciation_experiments():
    """Mixtures whose config has a speciation: section (the study runs only where asked for)."""
    return [name for name in experiments_of("gmm")
            if "speciation" in spec(name) and study_options(name, "speciation")["enable"]]


def guidance_experiments():
    """Network experiments whose config has a guidance_study: section (validated: the model has a null condition)."""
    return [name for name in experiments_of("ddpm")
            if "guidance_study" in spec(name) and study_options(name, "guidance_study")["enable"]]


def extra_targets():
    """The study files and figures of the experiments named by ``run:`` (default: all experiments)."""
    out = []
    for name in config.get("run", EXPERIMENTS):
        studies = ["decisions"]
        studies += ["immse"] if name in immse_experiments() else []
        studies += ["convergence"] if name in convergence_experiments() else []
        studies += ["speciation"] if name in speciation_experiments() else []
        studies += ["guidance"] if name in guidance_experiments() else []
        for study in studies:
            out += [f"{RESULTS}/{name}/{study}.nc", f"{RESULTS}/{name}/figures/{study}.png"]
    return out


def immse_inputs(w):
    inputs = {"profiles": f"{RESULTS}/{w.experiment}/profiles.nc"}
    if spec(w.experiment)["kind"] == "ddpm":
        inputs["model"] = model_file(w)
    if is_pretrained(spec(w.experiment)):
        inputs["samples"] = f"{RESULTS}/{w.experiment}/samples.nc"  # the model's own samples are its x_0
    return inputs


def decisions_inputs(w):
    """The profiles, the per-trajectory posteriors, and a pretrained model's generated states (samples.nc), its data
    for the speciation time."""
    inputs = {"profiles": f"{RESULTS}/{w.experiment}/profiles.nc", "source": decisions_source(w)}
    if is_pretrained(spec(w.experiment)):
        inputs["samples"] = f"{RESULTS}/{w.experiment}/samples.nc"
    return inputs


def summary_inputs(w):
    """The profiles, the study files summary.nc takes variables from (seminfo.stages.shared.STUDY_MERGE) and a network
    run's health checks (its attributes health_*)."""
    inputs = {"profiles": f"{RESULTS}/{w.experiment}/profiles.nc",
              "decisions": f"{RESULTS}/{w.experiment}/decisions.nc"}
    if w.experiment in immse_experiments():
        inputs["immse"] = f"{RESULTS}/{w.experiment}/immse.nc"
    if spec(w.experiment)["kind"] == "ddpm":
        inputs["health"] = f"{RESULTS}/{w.experiment}/health.json"
    return inputs


def decisions_source(w):
    """Per-trajectory posteriors: trajectories.nc (DDPM) or posterior.nc (Gaussian mixtures, replayed)."""
    if spec(w.experiment)["kind"] == "ddpm":
        return f"{RESULTS}/{w.experiment}/trajectories.nc"
    return f"{RESULTS}/{w.experiment}/posterior.nc"
