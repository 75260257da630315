"""One phantom: choose findings, shape the anatomy, render, and keep the true masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...constants import OBSERVATIONS, PATHOLOGIES
from .anatomy import Anatomy, AnatomyParams, build_anatomy, sample_params
from .findings import FINDINGS
from .render import compose, render_base

INFECTION = ("Lung Opacity", "Consolidation", "Pneumonia")
_PATHOLOGY_INDICES = [OBSERVATIONS.index(o) for o in PATHOLOGIES]


@dataclass
class Phantom:
    image: np.ndarray  # uint8 (S, S)
    truth: np.ndarray  # uint8 (14, S, S), OBSERVATIONS order, 1 inside a planted finding
    anatomy: Anatomy

    @property
    def positive(self) -> np.ndarray:
        """Ground-truth labels (14,) from the masks, so labels and masks can never disagree; No Finding
        as CheXpert's labeller sets it (a support device alone is not a finding)."""
        found = self.truth.reshape(len(OBSERVATIONS), -1).any(axis=1)
        found[0] = not found[_PATHOLOGY_INDICES].any()
        return found.astype(np.int8)


def sample_findings(rng: np.random.Generator, normal_frac: float = 0.25, prevalence: float = 0.22,
                    force: Sequence[str] = ()) -> list[str]:
    """Which findings to plant: a ``normal_frac`` of normal images, else each with ``prevalence``.

    An abnormal image always has at least one finding; ``force`` adds one of the given findings.
    """
    names = list(FINDINGS)
    chosen = set()
    if force:
        chosen.add(force[int(rng.integers(len(force)))])
    if rng.random() >= normal_frac or force:
        chosen.update(n for n in names if rng.random() < prevalence)
        if not chosen:
            chosen.add(names[int(rng.integers(len(names)))])
    return [n for n in names if n in chosen]


def make_phantom(rng: np.random.Generator, size: int, findings: Sequence[str],
                 params: AnatomyParams | None = None) -> Phantom:
    """Render one frontal phantom with ``findings`` planted (in observation order).

    ``params`` (edited in place by findings) lets a patient's studies share one anatomy.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if isinstance(findings, str):  # would be read letter by letter
        raise TypeError(f"findings must be a list of observation names, got the string {findings!r} "
                        f"(one finding: [{findings!r}])")
    unknown = [f for f in findings if f not in FINDINGS]
    if unknown:
        raise KeyError(f"no generator for {unknown}; known: {list(FINDINGS)}")
    # Separate streams for anatomy, findings and exposure: the same image with and without a
    # finding then differs only by the finding (a paired counterfactual, useful to test explainers).
    anatomy_rng, finding_rng, exposure_rng = rng.spawn(3)
    params = sample_params(anatomy_rng) if params is None else params
    for name in findings:
        if FINDINGS[name].prepare is not None:
            FINDINGS[name].prepare(params, finding_rng)
    anatomy = build_anatomy(params, size)
    scene = render_base(anatomy, anatomy_rng)
    truth = np.zeros((len(OBSERVATIONS), size, size), np.uint8)
    for name in findings:
        truth[OBSERVATIONS.index(name)] = FINDINGS[name].plant(anatomy, scene, finding_rng)
    return Phantom(compose(scene, exposure_rng), truth, anatomy)
