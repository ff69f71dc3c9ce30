"""Re-fit the shipped stage-model table: ``python -m synthsleep.psg.synthetic.fit_model CSV [EXTRA...] --out JSON``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from synthsleep.psg.synthetic.hypnogram import HypnogramModelError, fit_hypnogram_model


def main(argv: list[str] | None = None) -> int:
    """Fit the hypnogram model to real hypnograms and write it as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", help="Sleep-EDF night,epoch,stage CSV")
    ap.add_argument("extra", nargs="*", help="one-value-per-line hypnograms (YASA format)")
    ap.add_argument("--out", required=True, help="output JSON path")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = fit_hypnogram_model(args.csv, args.extra)
    except HypnogramModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(args.out, "w") as fh:
        json.dump(model, fh, indent=1)
    print(f"wrote {args.out} ({model['n_nights']} nights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
