"""Live PSG over LSL: ``lsl_inlet`` (resolve a bed's streams, poll samples with corrected,
dejittered timestamps), ``dejitter`` (the LSL-free timestamp dejitter and gap counter it uses
per stream), ``assembler`` (a bed's chunks → 30-s ``Epoch`` objects) and ``player``
(replay an EDF file as LSL streams, ``synthsleep replay``)."""

from .assembler import StreamEpochs
from .lsl_inlet import BedInlet, StreamError, StreamNotFound, resolve_stream

__all__ = ["BedInlet", "StreamEpochs", "StreamError", "StreamNotFound", "resolve_stream"]
