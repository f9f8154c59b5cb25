"""Package the default model: copy stage 4's merged file into `lorat_infer/default_model/` and record how
all four stages were trained (configs and results) as YAML beside it.

    python -m lorat_train.release_default   # after stages 1-2 (lorat-train), 3 and 4 (lorat_train.default_real)

Stages 1-2 (synthetic only) produce `lorat-synthetic.safetensors`, stage 3's starting point and the
"previous built-in model (synthetic only)" of bench/eval_default.py; stage 3 (real photographs) and stage 4
(photographs with held targets: faces, hand-held objects, and parts of bigger things; its window weight and size
learning rate chosen by `lorat_train.tune_window`) produce `lorat-default.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

SUMMARY_KEYS = ("mode", "steps", "trainable_params", "total_params", "final_val_auc", "best_val_auc", "best_step",
                "exported_best", "train_seconds", "amp")
PACKAGE = Path("lorat_infer/default_model")


def collect(run_dirs: list[Path], previous: dict | None = None) -> dict:
    """Each stage's config and results; a stage whose run folder is gone keeps its entry from `previous`."""
    stages = {}
    for i, run in enumerate(run_dirs, 1):
        if not (run / "summary.json").is_file():
            old = (previous or {}).get("stages", {}).get(f"stage{i}")
            if old is None:
                raise FileNotFoundError(f"{run}/summary.json: run this stage first (make default-model)")
            stages[f"stage{i}"] = old
            continue
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
    parser.add_argument("runs", nargs="*", default=["runs/default-stage1", "runs/default-stage2", "runs/default-real",
                                                      "runs/default-hold"])
    parser.add_argument("--model", default="runs/default-hold/model.safetensors", help="the file to package")
    parser.add_argument("--out-dir", default=str(PACKAGE))
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    record_path = out / "training-config.yaml"
    previous = yaml.safe_load(record_path.read_text()) if record_path.is_file() else None
    record = collect([Path(r) for r in args.runs], previous)
    if args.model:
        shutil.copyfile(args.model, out / "lorat-default.safetensors")
        print(f"packaged {args.model} as {out / 'lorat-default.safetensors'}")
    record_path.write_text(
        "# How lorat-default.safetensors was trained (written by lorat_train.release_default)\n"
        + yaml.safe_dump(record, sort_keys=False, default_flow_style=None, width=110))
    print(f"wrote {record_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
