"""A learned error model: how likely each unit of an annotation is wrong, from its signals.

:mod:`analysis.dep` computes, for every *unit* of a dataset's annotations (every gold span and
every gold-``O`` token), a handful of label-error signals: the model margin, the log-margin,
surface-form and neighbour consistency, the entity-type margin, the highest ``p(O)``, the error
type of the model's argmax decoding against the gold span, ... (:data:`SPAN_FEATURES`,
:data:`TOKEN_FEATURES`).  Hand-weighting them (:func:`analysis.dep.signals.combine` plus a per-type
calibration) leaves a lot on the table: each error kind shows in a *different* combination of
signals (a relabelled span in the type margin, a stretched span in ``p(O)`` and the boundary
tokens, a spurious span in ``p(O)`` over a one-token span), and one score cannot be a noisy-OR
of all of them with the same weights.

The error model is a multinomial logistic regression per unit type (:data:`UNIT_TYPES`):

* gold spans: ``clean`` / ``wrong_tag`` / ``span_shift`` / ``ghost`` (a gold span that should
  not exist);
* gold-``O`` tokens next to a gold span (``o_boundary``) and other gold-``O`` tokens (``o``):
  ``clean`` / ``missed`` (part of an entity left unlabelled) / ``span_shift`` (a span boundary
  that should include this token).

A unit's error probability is ``1 − p(clean)``; its DEP is that probability, and a task's DEP
is the max over its units (:mod:`analysis.dep`).  Because every unit type's model is fitted on
the same labels, the probabilities of spans and of ``O`` tokens are on one scale, which is what
the per-task max compares.  The most likely error class is reported as the unit's suspected
error kind.

Fitting needs units whose error status is known: ``bench/bench_detection.py`` injects synthetic
errors into a real corpus (:mod:`bench.noise`), scores them with cross-fitted probabilities, fits
on one half of the tasks and reports on the other; ``bench/fit_error_model.py`` pools the
selection halves of several such runs (models of different strength, so that the coefficients
are not tied to one confidence scale).  The fitted coefficients ship as
``analysis/dep/error_model.json`` (:func:`default_error_model`); :func:`fit_error_model` and
:meth:`ErrorModel.save` let a user fit their own (``ner-quality dep --error-model FILE``).
Features are standardised with the training mean and scale; a missing feature (NaN, e.g. the
neighbour signal when no span embeddings are given) is imputed with the training mean, so it
contributes nothing.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "UNIT_TYPES",
    "SPAN_FEATURES",
    "TOKEN_FEATURES",
    "SPAN_CLASSES",
    "TOKEN_CLASSES",
    "UnitModel",
    "ErrorModel",
    "fit_error_model",
    "default_error_model",
    "DEFAULT_PATH",
    "logit",
]

#: Unit types, each with its own model: gold spans, gold-``O`` tokens right next to a gold span
#: (in the same task), all other gold-``O`` tokens.
UNIT_TYPES: tuple[str, ...] = ("span", "o_boundary", "o")

#: Features of a gold span (column order of the feature matrix).
SPAN_FEATURES: tuple[str, ...] = (
    "margin",  # logit of the span's token-DEP max, (1 − margin) / 2 (AUM when epochs given)
    "log_margin_max",  # max over the span's tokens of log max p(other) − log p(gold)
    "log_margin_mean",  # mean of the same over the span's tokens
    "type",  # logit of the entity-type disagreement (analysis.dep.signals.type_disagreement)
    "surface",  # surface-form inconsistency across the dataset, [0, 1]
    "neighbour",  # share of similar spans with another label, [0, 1]; NaN without embeddings
    "outside",  # highest p(O) over the span's tokens
    "disagreement",  # confidence of the model's argmax where it differs from the gold tag
    "log_length",  # log of the span's length in tokens
    "pred_correct",  # error type of the model's argmax decoding against this gold span (one-hot)
    "pred_wrong_tag",
    "pred_span_shift",
    "pred_missed",
)

#: Features of a gold-``O`` token.
TOKEN_FEATURES: tuple[str, ...] = (
    "margin",  # logit of the token DEP (1 − margin) / 2
    "log_margin",  # log max p(other) − log p(O)
    "surface",  # the token's form is labelled elsewhere, [0, 1]
    "disagreement",  # confidence of the model's argmax where it is not O
    "capitalized",  # first character upper-case (0/1)
    "sentence_initial",  # first token of its task (0/1)
    "entity",  # logit of 1 − p(O)
)

SPAN_CLASSES: tuple[str, ...] = ("clean", "wrong_tag", "span_shift", "ghost")
TOKEN_CLASSES: tuple[str, ...] = ("clean", "missed", "span_shift")

DEFAULT_PATH = Path(__file__).with_name("error_model.json")


def logit(x: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """``log(x / (1 − x))`` with ``x`` clipped to ``[eps, 1 − eps]`` (NaN stays NaN).

    >>> logit(np.array([0.5, 0.9, np.nan])).round(3).tolist()
    [0.0, 2.197, nan]
    """
    p = np.clip(np.asarray(x, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def _features_for(unit_type: str) -> tuple[str, ...]:
    return SPAN_FEATURES if unit_type == "span" else TOKEN_FEATURES


def _classes_for(unit_type: str) -> tuple[str, ...]:
    return SPAN_CLASSES if unit_type == "span" else TOKEN_CLASSES


@dataclass(frozen=True)
class UnitModel:
    """Multinomial logistic regression of one unit type.

    ``z = ((x − mean) / scale) @ coef.T + intercept``; ``p = softmax(z)`` over ``classes``
    (``classes[0]`` is ``"clean"``).
    """

    unit_type: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    coef: np.ndarray  # (n_classes, n_features)
    intercept: np.ndarray  # (n_classes,)

    def __post_init__(self) -> None:
        nf, nc = len(self.features), len(self.classes)
        if nc < 2 or self.classes[0] != "clean":
            raise ValueError(f"{self.unit_type}: classes must start with 'clean', got "
                             f"{list(self.classes)}")
        shapes = {"mean": (nf,), "scale": (nf,), "coef": (nc, nf), "intercept": (nc,)}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if np.shape(arr) != shape:
                raise ValueError(f"{self.unit_type}: {name} must have shape {shape}, "
                                 f"got {np.shape(arr)}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.unit_type}: {name} has non-finite values")
        if np.any(np.asarray(self.scale) <= 0):
            raise ValueError(f"{self.unit_type}: scale must be > 0")

    def _z(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"{self.unit_type}: expected (n, {len(self.features)}) features "
                             f"{list(self.features)}, got shape {x.shape}")
        x = np.where(np.isnan(x), self.mean, x)  # missing -> training mean (no contribution)
        np.subtract(x, self.mean, out=x)
        np.divide(x, self.scale, out=x)
        # (coef @ x.T).T: the same sums as x @ coef.T, an order of magnitude faster for tall x
        z: np.ndarray = (self.coef @ x.T).T + self.intercept
        return z

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) log class probabilities of feature rows ``x`` (n, n_features)."""
        z = self._z(x)
        zmax = z.max(axis=1, keepdims=True)
        out: np.ndarray = z - (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))
        return out

    def error_log_odds(self, x: np.ndarray) -> np.ndarray:
        """(n,) ``log(1 − p(clean)) − log p(clean)``: the logit of the error probability."""
        return self.odds_and_suspected(x)[0]

    def suspected(self, x: np.ndarray) -> np.ndarray:
        """(n,) object: the most likely error class of each unit (ignoring ``clean``)."""
        return self.odds_and_suspected(x)[1]

    def odds_and_suspected(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`error_log_odds` and :meth:`suspected` from one evaluation of the model."""
        z = self._z(x)
        err = z[:, 1:]
        emax = err.max(axis=1)
        lse = emax + np.log(np.exp(err - emax[:, None]).sum(axis=1))
        names = np.asarray(self.classes[1:], dtype=object)
        return lse - z[:, 0], names[err.argmax(axis=1)] if len(z) else np.zeros(0, object)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "classes": list(self.classes),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [[float(v) for v in row] for row in self.coef],
            "intercept": [float(v) for v in self.intercept],
        }

    @classmethod
    def from_dict(cls, unit_type: str, d: Mapping[str, Any]) -> UnitModel:
        try:
            return cls(
                unit_type=unit_type,
                features=tuple(d["features"]),
                classes=tuple(d["classes"]),
                mean=np.asarray(d["mean"], dtype=np.float64),
                scale=np.asarray(d["scale"], dtype=np.float64),
                coef=np.asarray(d["coef"], dtype=np.float64),
                intercept=np.asarray(d["intercept"], dtype=np.float64),
            )
        except KeyError as exc:
            raise ValueError(f"error model, unit type {unit_type!r}: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"error model, unit type {unit_type!r}: {exc}") from None


@dataclass(frozen=True)
class ErrorModel:
    """One :class:`UnitModel` per unit type, plus free-form provenance (``meta``)."""

    units: Mapping[str, UnitModel]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [u for u in UNIT_TYPES if u not in self.units]
        if missing:
            raise ValueError(f"error model has no model for unit type(s) {missing}")
        for u in UNIT_TYPES:
            m = self.units[u]
            if m.features != _features_for(u):
                raise ValueError(
                    f"error model, unit type {u!r}: features {list(m.features)} do not match "
                    f"this version's {list(_features_for(u))}; refit it (bench_detection.py)"
                )

    @classmethod
    def untrained(cls) -> ErrorModel:
        """All coefficients 0: every unit scores alike.  For extracting features to fit on."""
        units = {}
        for u in UNIT_TYPES:
            nf, nc = len(_features_for(u)), len(_classes_for(u))
            units[u] = UnitModel(u, _features_for(u), _classes_for(u), np.zeros(nf), np.ones(nf),
                                 np.zeros((nc, nf)), np.zeros(nc))
        return cls(units, {"untrained": True})

    def error_log_odds(self, unit_type: str, x: np.ndarray) -> np.ndarray:
        """(n,) logit of the error probability of units of ``unit_type`` (see UnitModel)."""
        return self.units[unit_type].error_log_odds(x)

    def suspected(self, unit_type: str, x: np.ndarray) -> np.ndarray:
        """(n,) the most likely error class of units of ``unit_type``."""
        return self.units[unit_type].suspected(x)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "ner-quality-error-model/1", "meta": dict(self.meta),
                "units": {u: self.units[u].to_dict() for u in UNIT_TYPES}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorModel:
        if not isinstance(d, Mapping) or d.get("format") != "ner-quality-error-model/1":
            raise ValueError("not an error model file (expected format "
                             "'ner-quality-error-model/1')")
        units = d.get("units")
        if not isinstance(units, Mapping):
            raise ValueError("error model: 'units' must be an object")
        return cls({u: UnitModel.from_dict(u, units[u]) for u in units},
                   dict(d.get("meta") or {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ErrorModel:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{p}: error model file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: not a JSON error model ({exc})") from None
        try:
            return cls.from_dict(d)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None


@functools.lru_cache(maxsize=1)
def default_error_model() -> ErrorModel:
    """The error model shipped with the package (``analysis/dep/error_model.json``)."""
    return ErrorModel.load(DEFAULT_PATH)


def fit_error_model(
    features: Mapping[str, np.ndarray],
    labels: Mapping[str, Sequence[str] | np.ndarray],
    *,
    C: float = 1.0,
    class_weight: Mapping[str, float] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> ErrorModel:
    """Fit one multinomial logistic regression per unit type.

    Parameters
    ----------
    features : unit type → (n, n_features) float, columns :data:`SPAN_FEATURES` for ``"span"``,
        :data:`TOKEN_FEATURES` otherwise (NaN = missing: imputed with the column mean)
    labels : unit type → (n,) class names (:data:`SPAN_CLASSES` / :data:`TOKEN_CLASSES`)
    C : inverse L2 regularisation strength (scikit-learn's ``C``)
    class_weight : class name → weight (default 1 each), e.g. to trade recall between kinds
    meta : provenance stored with the model

    Returns
    -------
    ErrorModel

    Raises
    ------
    ValueError
        A unit type without data, a shape mismatch, unknown class names, or no error of any
        class for a unit type.
    """
    from sklearn.linear_model import LogisticRegression

    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be a positive number, got {C}")
    units: dict[str, UnitModel] = {}
    for u in UNIT_TYPES:
        if u not in features or u not in labels:
            raise ValueError(f"no training units of type {u!r}")
        x = np.asarray(features[u], dtype=np.float64)
        y = np.asarray(labels[u], dtype=object)
        names, classes = _features_for(u), _classes_for(u)
        if x.ndim != 2 or x.shape[1] != len(names) or x.shape[0] != len(y):
            raise ValueError(f"{u}: features must be (n, {len(names)}) with n = {len(y)} labels, "
                             f"got {x.shape}")
        bad = sorted(set(y.tolist()) - set(classes))
        if bad:
            raise ValueError(f"{u}: unknown classes {bad}; allowed {list(classes)}")
        present = [c for c in classes if (y == c).any()]
        if "clean" not in present or len(present) < 2:
            raise ValueError(f"{u}: needs clean units and errors of at least one class, got "
                             f"{present}")
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN (absent) feature
            mean = np.nanmean(x, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        x = np.where(np.isnan(x), mean, x)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        cw = {c: float((class_weight or {}).get(c, 1.0)) for c in present}
        clf = LogisticRegression(C=C, max_iter=5000, class_weight=cw)
        clf.fit((x - mean) / scale, y.astype(str))
        coef = np.zeros((len(classes), len(names)))
        icpt = np.full(len(classes), -30.0)  # a class never seen: (practically) never predicted
        got = [str(c) for c in clf.classes_]
        if len(got) == 2:  # binary: sklearn returns one row (for got[1]) -> softmax form
            coef[classes.index(got[1])] = clf.coef_[0]
            icpt[classes.index(got[1])] = clf.intercept_[0]
            coef[classes.index(got[0])] = 0.0
            icpt[classes.index(got[0])] = 0.0
        else:
            for row, c in enumerate(got):
                coef[classes.index(c)] = clf.coef_[row]
                icpt[classes.index(c)] = clf.intercept_[row]
        units[u] = UnitModel(u, names, classes, mean, scale, coef, icpt)
    return ErrorModel(units, dict(meta or {}))
