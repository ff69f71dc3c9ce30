"""The step artifact: ONNX export (build time, torch), metadata, parity check, and the ONNX
Runtime session everything that infers uses (no torch).

Importing this package does not import torch; ``synthsleep.export.onnx_export`` does.

- :mod:`~synthsleep.export.artifact`: ``read_artifact``, ``check_artifact``, ``ArtifactInfo``
- :mod:`~synthsleep.export.runtime`: ``StepRuntime``, ``StepState``, ``StepOutput``
- :mod:`~synthsleep.export.onnx_export`: ``export_step`` (torch)
- :mod:`~synthsleep.export.verify`: ``verify_artifact``
"""

from synthsleep.export.artifact import ArtifactError, ArtifactInfo, StateSpec, check_artifact, read_artifact
from synthsleep.export.runtime import RuntimeInputError, StepOutput, StepRuntime, StepState

__all__ = ["ArtifactError", "ArtifactInfo", "StateSpec", "check_artifact", "read_artifact",
           "RuntimeInputError", "StepOutput", "StepRuntime", "StepState"]
