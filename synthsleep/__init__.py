"""synthsleep: a bedside sleep monitor built on SynthSleepNet."""
__version__ = "0.1.0"
