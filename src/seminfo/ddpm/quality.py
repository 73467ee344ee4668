"""Independent checks of a trained digits model: are the samples the digits they were asked to be?

A multinomial logistic regression trained on the real 8x8 digits (scikit-learn's bundled set) classifies the
generated samples; the agreement with the conditioning label measures sample quality without reference to
the diffusion model. Alongside: the entropy at t = T (must be the prior entropy), the mean entropy at the end
of generation, and how often the posterior's final MAP class is the conditioning label.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from ..io import atomic_path, open_checked

log = logging.getLogger(__name__)

__all__ = ["digits_classifier", "digits_quality"]


def digits_classifier(seed: int = 0):
    """Logistic regression on the real digits (pixels scaled to [0, 1]); returns (model, held-out accuracy)."""
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    held_out = LogisticRegression(max_iter=5000).fit(X_tr, y_tr).score(X_te, y_te)
    return LogisticRegression(max_iter=5000).fit(X, y), float(held_out)


def digits_quality(summary, samples, trajectories, output) -> dict:
    """Write quality.json for a digits experiment and return its contents."""
    s = open_checked(samples, required=("image", "label"))
    ds = open_checked(summary, required=("entropy_marginal", "entropy"))
    tr = open_checked(trajectories, required=("posterior", "label"))
    clf, held_out = digits_classifier()
    images = s["image"].values.reshape(s.sizes["sample"], -1)
    if images.shape[1] != 64:
        raise ValueError(f"{samples}: digits samples must be 8x8 single-channel images")
    predicted = clf.predict(images)
    labels = s["label"].values
    names = [str(c) for c in ds["class"].values]
    map_class = tr["posterior"].isel(time=0).values.argmax(-1)
    report = {
        "classifier": "sklearn LogisticRegression on the real digits",
        "classifier_held_out_accuracy": held_out,
        "sample_label_agreement": float(np.mean(predicted == labels)),
        "sample_label_agreement_per_class": {names[k]: float(np.mean(predicted[labels == k] == k))
                                             for k in range(len(names))},
        "entropy_at_T_bits": float(ds["entropy_marginal"].isel(time=-1)),
        "prior_entropy_bits": float(ds.attrs["prior_entropy_bits"]),
        "first_time": int(ds["time"].values[0]),
        "mean_entropy_at_first_time_bits": float(ds["entropy_marginal"].isel(time=0)),
        "map_equals_label_at_first_time": float(np.mean(map_class == tr["label"].values)),
        "n_samples": int(labels.size),
    }
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    log.info("quality: %s", report)
    return report
