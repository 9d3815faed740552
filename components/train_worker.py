"""One training process of the train step's data-parallel run (one per GPU), started by
`model_core.training.distributed.launch_workers` from `components.steps.train`:

    python -m components.train_worker --config-json FILE --out MODEL_DIR --tracking-uri URI --run-id ID

It joins the process group (rendezvous on 127.0.0.1), trains through the single-process entry point
(`train_report_model`) and hands the trainer an `on_epoch` that logs each finished epoch to the pipeline's MLflow
run; the trainer calls it on rank 0 alone, and rank 0 alone writes checkpoints and the model directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from model_core.config import Config, build_section
from model_core.training import distributed
from model_core.training.trainer import train_report_model
from registry import tracking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", type=Path, required=True, help="the run's full config as JSON")
    parser.add_argument("--out", type=Path, required=True, help="the model directory (written by rank 0)")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--run-id", required=True, help="the pipeline's MLflow run")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format=f"%(asctime)s rank {os.environ.get('RANK', '?')} %(levelname)s %(name)s: %(message)s")
    cfg = build_section(Config, json.loads(args.config_json.read_text()))
    distributed.init_process_group()
    try:
        train_report_model(cfg, args.out, resume=args.resume, on_epoch=lambda stage, record: tracking.log_history(
            args.tracking_uri, args.run_id, {stage: [record]}))
    finally:
        distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
