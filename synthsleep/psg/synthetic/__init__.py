"""Synthetic polysomnography nights for training, testing and demos (no real full-night PSG here).

Public API:
    ``synthesize_night(seed, hours, subject=None) -> SyntheticNight``
    ``write_night(night, path)`` (EDF+ with Sleep-EDF style stage and event annotations)
    ``SubjectParams`` (``.draw(rng, ahi_range)``), ``SyntheticNight``, ``CHANNELS``
    ``fit_hypnogram_model(csv) -> dict``, ``load_hypnogram_model()``, ``sample_hypnogram(rng, n)``
    ``hypnogram_stats(stages) -> dict``
"""

from synthsleep.psg.synthetic.hypnogram import fit_hypnogram_model, load_hypnogram_model, sample_hypnogram
from synthsleep.psg.synthetic.night import CHANNELS, SyntheticNight, synthesize_night, write_night
from synthsleep.psg.synthetic.stats import hypnogram_stats
from synthsleep.psg.synthetic.subject import SubjectParams

__all__ = [
    "CHANNELS", "SubjectParams", "SyntheticNight", "fit_hypnogram_model", "hypnogram_stats",
    "load_hypnogram_model", "sample_hypnogram", "synthesize_night", "write_night",
]
