"""`pgjax export RUN_DIR --out DIR`: a trained run's actors as a numpy-runnable artifact.

    pgjax export runs/multi_microgrid --out export/mmg
    pgjax export runs/multi_microgrid --out export/mmg --seed-index 1 --onnx

Writes one safetensors weights file per learned agent and `manifest.json` (architecture,
observation and action schema, control period, scenario, content hash): see
`pgjax.deploy.export`. The policy then runs with numpy alone (`pgjax.deploy.policy`);
`--onnx` adds one ONNX graph per agent (`pgjax.deploy.onnx_export`, for onnxruntime).
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    """The `pgjax export` parser (no side effects)."""
    parser = argparse.ArgumentParser(prog="pgjax export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder of pgjax train (config.yaml, checkpoint.msgpack)")
    parser.add_argument("--out", required=True, help="export folder (created; files in it are replaced)")
    parser.add_argument("--seed-index", type=int, default=0, help="which seed of the checkpoint (default 0)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write <agent>.onnx per agent (needs the onnx package)")
    return parser


def run(args) -> int:
    """Export the run as `args` say (parsed by `build_parser`); the exit status."""
    from pgjax.commands.common import error
    from pgjax.deploy.export import export_run
    from pgjax.errors import PgjaxError

    try:
        manifest = export_run(args.run_dir, args.out, args.seed_index, onnx=args.onnx)
    except PgjaxError as e:
        return error("pgjax export", e)
    names = ", ".join(a["name"] for a in manifest["agents"])
    print(f"pgjax export: {args.run_dir} -> {args.out}: {len(manifest['agents'])} agent(s) [{names}], "
          f"scenario {manifest['scenario']['name']}, content hash {manifest['content_hash'][:16]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`pgjax export` with `argv` (default: the process's arguments); the exit status."""
    return run(build_parser().parse_args(argv))
