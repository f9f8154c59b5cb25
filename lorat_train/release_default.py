"""Record how the packaged default model was trained: both stage configs and their results, as YAML.

    python -m lorat_train.release_default   # after `lorat-train` ran both configs/default-stage*.yaml

Writes `lorat_infer/default_model/training-config.yaml` next to the model file it describes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

SUMMARY_KEYS = ("mode", "steps", "trainable_params", "total_params", "final_val_auc", "train_seconds", "amp")


def collect(run_dirs: list[Path]) -> dict:
    stages = {}
    for i, run in enumerate(run_dirs, 1):
        config = yaml.safe_load((run / "config.yaml").read_text())
        summary = json.loads((run / "summary.json").read_text())
        history = summary.get("history", {})
        stages[f"stage{i}"] = {
            "result": {k: summary.get(k) for k in SUMMARY_KEYS}
            | {"val_curve": list(zip(history.get("val_steps", []), history.get("val_auc", [])))},
            "config": config,
        }
    return {"reproduce": "make default-model", "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=["runs/default-stage1", "runs/default-stage2"])
    parser.add_argument("--out", default="lorat_infer/default_model/training-config.yaml")
    args = parser.parse_args(argv)
    record = collect([Path(r) for r in args.runs])
    Path(args.out).write_text("# How lorat-default.safetensors was trained (written by lorat_train.release_default)\n"
                              + yaml.safe_dump(record, sort_keys=False, default_flow_style=None, width=110))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
