"""Wall time per pipeline stage, from run manifests.

    python benchmarks/pipeline_stages.py --run smoke          # run the smoke profile, then report
    python benchmarks/pipeline_stages.py --run smoke --run quick   # both (quick: ~25 min on 2 cores)
    python benchmarks/pipeline_stages.py runs/quick-1 ...     # report existing run directories

Each run directory's manifest.json records every stage's wall time; this prints them side by
side (one column per run) with the total. ``--json FILE`` also writes them as
``{"runs": [{"run_dir", "profile", "stages": {stage: wall_s}, "total_s"}]}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from aad_kit.pipeline import STAGES, run_pipeline


def stage_times(run_dir: Path) -> tuple[str, dict[str, float]]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return manifest["profile"], {k: v["wall_s"] for k, v in manifest["stages"].items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path)
    ap.add_argument("--run", choices=["smoke", "quick", "full"], action="append", default=[],
                    help="run this profile first (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the stage times here")
    args = ap.parse_args(argv)
    dirs = list(args.run_dirs)
    for profile in args.run:
        dirs.append(run_pipeline(profile, Path(tempfile.mkdtemp()) / profile, progress=False))
    if not dirs:
        ap.error("give run directories or --run PROFILE")
    runs = [(d, *stage_times(d)) for d in dirs]
    header = f"{'stage':26}" + "".join(f"{f'{p} ({d.name})':>24}" for d, p, _ in runs)
    print(header)
    for stage in STAGES:
        row = "".join(f"{t[stage.name]:>23.1f}s" if stage.name in t else f"{'-':>24}" for _, _, t in runs)
        print(f"{stage.name:26}{row}")
    print(f"{'total':26}" + "".join(f"{sum(t.values()):>23.1f}s" for _, _, t in runs))
    result = {"runs": [{"run_dir": str(d), "profile": p, "stages": t, "total_s": sum(t.values())}
                       for d, p, t in runs]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
