"""Linear probes on off-the-shelf features: scikit-learn's linear SVM, logistic regression or ridge classifier."""

from __future__ import annotations

import time

import numpy as np

from cnnlab.errors import UnknownNameError

CLASSIFIERS = ("svm", "logreg", "ridge")


def linear_probe(features: dict, classifier: str = "svm", c: float = 1.0) -> dict[str, float]:
    """Fit on the train features (standardised), report test error. The off-the-shelf recipe of Razavian et
    al. 2014 (they L2-normalise and use a linear SVM). ``ridge``: least squares on ±1 class targets with an L2
    penalty α = 1/c (larger c, weaker regularisation, as for the others), solved in closed form: seconds where the
    SVM's iterative solver takes minutes (10,000 × 3,072 features on one CPU thread: 5 s against 112–320 s, for the
    same accuracy; :mod:`cnnlab.generative.probe`)."""
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if classifier not in CLASSIFIERS:
        raise UnknownNameError("classifier", classifier, CLASSIFIERS)
    if classifier == "svm":
        model = LinearSVC(C=c, dual="auto", max_iter=5000)
    elif classifier == "logreg":
        model = LogisticRegression(C=c, max_iter=1000)
    else:
        model = RidgeClassifier(alpha=1 / c)
    pipeline = make_pipeline(StandardScaler(), model)
    start = time.perf_counter()
    pipeline.fit(features["train_x"], features["train_y"])
    seconds = time.perf_counter() - start
    predictions = pipeline.predict(features["test_x"])
    return {
        "test_error": float(np.mean(predictions != features["test_y"])),
        "train_error": float(np.mean(pipeline.predict(features["train_x"]) != features["train_y"])),
        "fit_seconds": seconds,
        "train_samples": len(features["train_y"]),
        "dim": int(features["train_x"].shape[1]),
    }
