"""The ``synthsleep`` command: one subcommand per job, each with ``--help`` and examples.

Subcommands live next to the code they drive; each module offers ``add_arguments(parser)`` and
``run(args) -> int``. This file only wires them, imports them lazily (so ``synthsleep monitor``
never imports torch) and turns user errors into one clear line instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help, examples)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("synthsleep.demo", "replay a synthetic night live into the monitor with the bundled model",
             "synthsleep demo\nsynthsleep demo --hours 2 --speed 120 --metrics 127.0.0.1:9109"),
    "synth": ("synthsleep.psg.synthetic.cli", "write synthetic PSG nights (EDF+ with annotations)",
              "synthsleep synth --nights 2 --hours 1 --seed 7 --out nights/"),
    "prepare": ("synthsleep.offline_training.prepare", "EDF (+ annotations) folder -> Parquet epoch shards",
                "synthsleep prepare --in nights/ --out shards/"),
    "pretrain": ("synthsleep.offline_training.pretrain", "self-supervised pretraining (NeuroNet, SynthSleepNet)",
                 "synthsleep pretrain unimodal --modality eeg --shards shards/ --out runs/eeg\n"
                 "synthsleep pretrain multimodal --shards shards/ --out runs/mm"),
    "probe": ("synthsleep.offline_training.probe", "linear probe on a frozen encoder",
              "synthsleep probe --shards shards/ --init runs/mm --out runs/probe"),
    "finetune": ("synthsleep.offline_training.finetune", "fine-tune staging / apnea / hypopnea over whole nights",
                 "synthsleep finetune --task all --labels 1.0 --shards shards/ --init runs/mm --out runs/ft"),
    "adapt": ("synthsleep.offline_training.adapt", "adapt a model to a site's unlabelled recordings (no labels)",
              "synthsleep adapt --in site_recordings/ --out model-site.onnx\n"
              "synthsleep adapt --in night1.edf night2.edf --model model.onnx --out model-site.onnx"),
    "evaluate": ("synthsleep.offline_training.evaluate", "accuracy, F1, kappa, AUROC, AHI on a split",
                 "synthsleep evaluate --model runs/ft/model.onnx --shards shards/ --out eval/"),
    "export": ("synthsleep.export.onnx_export", "export a checkpoint to the ONNX step artifact",
               "synthsleep export runs/ft/model --out model.onnx"),
    "verify": ("synthsleep.export.verify", "check an artifact: ONNX checker, ORT vs PyTorch",
               "synthsleep verify model.onnx --checkpoint runs/ft/model"),
    "score": ("synthsleep.score", "score an EDF/XDF offline: hypnogram, events, EDF+ annotations, report",
              "synthsleep score night.edf --out scored/\nsynthsleep score labrecorder.xdf --out scored/"),
    "replay": ("synthsleep.stream.player", "replay an EDF/XDF as live LSL streams",
               "synthsleep replay night.edf --speed 10 --name bed1\nsynthsleep replay labrecorder.xdf --name bed1"),
    "check-faults": ("synthsleep.faultcheck", "run the monitor's fault matrix (real LSL, real files)",
                     "synthsleep check-faults --quick\nsynthsleep check-faults --only state_truncated"),
    "monitor": ("synthsleep.monitor", "the realtime monitor: LSL beds -> stages, apnea alerts, metrics",
                "synthsleep monitor --stream bed1 --bed 1 --events events.jsonl\n"
                "synthsleep monitor --config beds.toml --metrics 127.0.0.1:9109"),
}


def _load(spec: str):
    """Import the module ``spec`` and return its (add_arguments, run)."""
    mod = importlib.import_module(spec)
    return mod.add_arguments, mod.run


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthsleep",
        description="Bedside sleep monitor: live PSG over LSL -> sleep stages and apnea alerts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'synthsleep COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (spec, help_, examples) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_,
                           epilog="examples:\n  " + examples.replace("\n", "\n  "),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if names is None or name in names:
            add_arguments, _ = _load(spec)
            add_arguments(p)
        p.set_defaults(_spec=spec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = [a for a in argv if a in COMMANDS][:1]
    parser = build_parser(wanted or [])
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    _, run = _load(args._spec)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if args.verbose >= 2:
            raise
        print(f"synthsleep {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
