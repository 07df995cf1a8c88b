"""The ``sds3d`` command. Parses arguments, then calls plain functions with a config.

User mistakes (bad config, missing weights, unwritable folder, corrupt checkpoint, ...) raise
``sds3d.errors.UserError`` and end with one line on stderr and exit status 2; Ctrl-C or SIGTERM
during training saves a checkpoint (exit 130 / 143).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

EXIT_USER_ERROR = 2


def _split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def cmd_run(args) -> int:
    from .config import load_config
    from .pipeline import run
    from .runs import load_run_config, prepare_run_dir

    config_path, overrides = _split_config_args(args.items)
    if args.resume:
        run_dir = Path(args.resume)
        if config_path is not None:
            raise_user(f"give either a CONFIG or --resume RUN_DIR, not both (got {config_path!r})")
        cfg = load_run_config(run_dir, overrides)
    else:
        if config_path is None:
            raise_user("missing CONFIG: try `sds3d run configs/toy.yaml prompt=\"a red cube\"`")
        cfg = load_config(config_path, overrides)
        run_dir = prepare_run_dir(cfg, overwrite=args.overwrite)
    print(f"sds3d: run folder {run_dir}", file=sys.stderr)
    summary = run(cfg, run_dir, resume=bool(args.resume))
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    shown = {k: summary[k] for k in ("prompt", "train_seconds", "skipped_steps", "final_loss_sds", "orbit") if k in summary}
    if isinstance(summary.get("mesh"), dict):
        shown["mesh"] = summary["mesh"].get("obj")
    ev = summary.get("eval") or {}
    shown.update({k: ev[k] for k in ("mesh_iou", "colour_error", "recognition") if ev.get(k) is not None})
    print(json.dumps(shown, indent=2))


def cmd_export(args) -> int:
    from .pipeline import export_mesh
    from .runs import load_run_config, load_scene, update_summary

    overrides = []
    if args.resolution is not None:
        overrides.append(f"export.resolution={args.resolution}")
    if args.format:
        overrides.append(f"export.formats=[{','.join(args.format)}]")
    cfg = load_run_config(Path(args.run_dir), overrides)
    result = export_mesh(cfg, Path(args.run_dir), load_scene(cfg, Path(args.run_dir)))
    update_summary(Path(args.run_dir), result)
    print(json.dumps(result, indent=2))
    return 0


def cmd_render(args) -> int:
    from .pipeline import render_orbit
    from .runs import load_run_config, load_scene, update_summary

    overrides = [f"orbit.frames={args.frames}"] if args.frames else []
    if args.resolution:
        overrides.append(f"orbit.resolution={args.resolution}")
    cfg = load_run_config(Path(args.run_dir), overrides)
    path = render_orbit(cfg, Path(args.run_dir), load_scene(cfg, Path(args.run_dir)))
    update_summary(Path(args.run_dir), {"orbit": str(path)})
    print(path)
    return 0


def cmd_eval(args) -> int:
    from .eval import evaluate_run, load_mesh_world
    from .runs import load_run_config, load_scene, update_summary

    run_dir = Path(args.run_dir)
    cfg = load_run_config(run_dir)
    metrics = evaluate_run(cfg, load_mesh_world(run_dir, cfg.export.up_axis), load_scene(cfg, run_dir))
    update_summary(run_dir, {"eval": metrics})
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import report

    print(report(args.prior))
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_sweep_cli

    return run_sweep_cli(args)


def raise_user(msg: str):
    from .errors import UserError

    raise UserError(msg)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sds3d", description="Text prompt -> NeRF -> Score Distillation Sampling -> mesh.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="optimise a NeRF for a prompt, then export mesh + orbit video",
                       description="sds3d run CONFIG [key=value ...]   |   sds3d run --resume RUN_DIR [key=value ...]")
    r.add_argument("items", nargs="*", metavar="CONFIG|key=value", help='a YAML config then overrides, e.g. prompt="a red cube" guidance.scale=7.5')
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("export", help="extract the mesh of a run again (other resolution or format)")
    e.add_argument("run_dir")
    e.add_argument("--resolution", type=int)
    e.add_argument("--format", action="append", choices=["obj", "glb", "ply", "splat_ply"])
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("render", help="render the orbit video of a run")
    v.add_argument("run_dir")
    v.add_argument("--frames", type=int)
    v.add_argument("--resolution", type=int)
    v.set_defaults(func=cmd_render)

    m = sub.add_parser("eval", help="toy-world metrics of a run (IoU, colour error, recognition)")
    m.add_argument("run_dir")
    m.set_defaults(func=cmd_eval)

    d = sub.add_parser("doctor", help="what is installed, which backends `auto` picks, and whether a prior is found")
    d.add_argument("--prior", default="toy", help="a prior name/folder/hub id to look for (default: toy)")
    d.set_defaults(func=cmd_doctor)

    # Parsed by the recipe itself (main() hands it the arguments): `sds3d train-prior --help` lists them.
    sub.add_parser("train-prior", help="train the embedded toy prior (about 45 min on 2 CPU cores; --help for options)")

    try:
        from .sweep import add_sweep_parser

        add_sweep_parser(sub, cmd_sweep)
    except ImportError:
        pass
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-prior"]:  # its own options (argparse REMAINDER drops leading --flags)
        from .toyworld.train_prior import main as train_toy_main

        train_toy_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("sds3d: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        from .checkpoint import TrainingInterrupted
        from .errors import UserError

        if isinstance(e, TrainingInterrupted):
            print(f"sds3d: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, UserError):
            print(f"sds3d: error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
