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
    from .pipeline import StopRequest

    stop = StopRequest()  # from the start: a signal before the first step leaves no folder behind
    with stop.installed():
        return _run(args, stop)


def _run(args, stop) -> int:
    from .config import load_config
    from .pipeline import run
    from .runs import check_resume_overrides, load_run_config, open_existing, open_run

    config_path, overrides = _split_config_args(args.items)
    if args.print_config:  # the resolved config, exactly as config.yaml would hold it, and nothing else
        from .config import to_yaml

        cfg = load_run_config(Path(args.resume), overrides) if args.resume else load_config(config_path, overrides)
        print(to_yaml(cfg), end="")
        return 0
    if args.resume:
        if config_path is not None:
            raise_user(f"give either a CONFIG or --resume RUN_DIR, not both (got {config_path!r})")
        if args.overwrite:
            raise_user("--overwrite replaces a run and --resume continues it: give one of them")
        check_resume_overrides(overrides)
        cfg = load_run_config(Path(args.resume), overrides)
        folder = open_existing(args.resume)
    else:
        if config_path is None:
            raise_user("missing CONFIG: try `sds3d run configs/toy.yaml prompt=\"a red cube\"`")
        cfg = load_config(config_path, overrides)
        folder = open_run(cfg, overwrite=args.overwrite, config_path=config_path)
    with folder as run_dir:
        print(f"sds3d: run folder {run_dir}", file=sys.stderr, flush=True)
        summary = run(cfg, run_dir, resume=bool(args.resume), stop=stop)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    shown = {k: summary[k] for k in ("prompt", "train_seconds", "skipped_steps", "final_loss_sds", "orbit") if k in summary}
    if isinstance(summary.get("mesh"), dict):
        shown["mesh"] = summary["mesh"].get("obj")
    ev = summary.get("eval") or {}
    shown.update({k: ev[k] for k in ("mesh_iou", "colour_error", "recognition") if ev.get(k) is not None})
    print(json.dumps(shown, indent=2))


def _load_run(run_dir: Path, overrides: list[str] | None = None):
    from .errors import phase
    from .runs import load_run_config, load_scene

    cfg = load_run_config(run_dir, overrides)
    phase(f"loading the scene of {run_dir}")
    return cfg, load_scene(cfg, run_dir)


def cmd_export(args) -> int:
    from .pipeline import export_mesh
    from .runs import open_existing, update_summary

    overrides = list(args.overrides)
    if args.resolution is not None:
        overrides.append(f"export.resolution={args.resolution}")
    if args.format:
        overrides.append(f"export.formats=[{','.join(args.format)}]")
    with open_existing(args.run_dir) as run_dir:
        cfg, scene = _load_run(run_dir, overrides)
        result = export_mesh(cfg, run_dir, scene)
        update_summary(run_dir, result)
    print(json.dumps(result, indent=2))
    return 0


def cmd_render(args) -> int:
    from .errors import phase
    from .pipeline import render_orbit
    from .runs import open_existing, update_summary

    overrides = [f"orbit.frames={args.frames}"] if args.frames is not None else []
    if args.resolution is not None:
        overrides.append(f"orbit.resolution={args.resolution}")
    if args.out is not None and Path(args.out).suffix.lower() not in (".mp4", ".gif"):
        raise_user(f"--out {args.out}: give a .mp4 or .gif file")
    with open_existing(args.run_dir) as run_dir:
        cfg, scene = _load_run(run_dir, overrides)
        if args.out is None:
            phase("replacing the run's orbit video (give --out PATH to keep it)")
        path = render_orbit(cfg, run_dir, scene, path=args.out)
        if args.out is None:
            update_summary(run_dir, {"orbit": str(path)})
    print(path)
    return 0


def cmd_eval(args) -> int:
    from .errors import phase
    from .eval import evaluate_run, load_mesh_world
    from .runs import open_existing, update_summary

    with open_existing(args.run_dir) as run_dir:
        cfg, scene = _load_run(run_dir)
        mesh = load_mesh_world(run_dir, cfg.export.up_axis)
        phase(f"evaluating against the toy world ({cfg.eval.iou_resolution}^3 IoU grid, the judge's views)")
        metrics = evaluate_run(cfg, mesh, scene)
        update_summary(run_dir, {"eval": metrics})
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_report(args) -> int:
    from .report import write_run_report
    from .runs import load_run_config

    run_dir = Path(args.run_dir)
    load_run_config(run_dir)  # a run folder, or one line saying it is not
    print(write_run_report(run_dir))
    return 0


def cmd_doctor(args) -> int:
    """Exit 1 when the prior asked about is not found (the report says what to do)."""
    from .doctor import check_prior, report

    print(report(args.prior))
    return 0 if check_prior(args.prior)["found"] else 1


def cmd_sweep(args) -> int:
    from .sweep import run_sweep_cli

    return run_sweep_cli(args)


def raise_user(msg: str):
    from .errors import UserError

    raise UserError(msg)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sds3d")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sds3d", description="Text prompt -> NeRF -> Score Distillation Sampling -> mesh.")
    p.add_argument("--version", action="version", version=f"sds3d {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter

    r = sub.add_parser("run", help="optimise a NeRF for a prompt, then export mesh + orbit video",
                       description="sds3d run CONFIG [key=value ...]   |   sds3d run --resume RUN_DIR [key=value ...]")
    r.add_argument("items", nargs="*", metavar="CONFIG|key=value", help='a YAML config then overrides, e.g. prompt="a red cube" guidance.scale=7.5')
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder of the same name (only an sds3d run folder, only its own files)")
    r.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every key with its value) and exit without running")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="write report.html of a run folder again (after export, render or eval)",
                        formatter_class=defaults)
    rp.add_argument("run_dir", type=Path, help="a run folder")
    rp.set_defaults(func=cmd_report)

    e = sub.add_parser("export", help="extract the mesh of a run again (other resolution or format)", formatter_class=defaults,
                       description="Replaces RUN_DIR/mesh/ (every format in it) once the new files are complete.")
    e.add_argument("run_dir", type=Path, help="a run folder")
    e.add_argument("overrides", nargs="*", metavar="key=value",
                   help="export settings, e.g. export.target_faces=5000 export.texture_size=1024")
    e.add_argument("--resolution", type=int, help="density grid samples per axis (default: the run's export.resolution)")
    e.add_argument("--format", action="append", choices=["obj", "glb", "ply"],
                   help="a file format to write; repeat for several (default: the run's export.formats)")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("render", help="render the orbit video of a run", formatter_class=defaults,
                       description="Writes --out, or replaces RUN_DIR/orbit.mp4 once the new video is complete.")
    v.add_argument("run_dir", type=Path, help="a run folder")
    v.add_argument("--frames", type=int, help="frames in the full turn (default: the run's orbit.frames)")
    v.add_argument("--resolution", type=int, help="pixels per side (default: the run's orbit.resolution)")
    v.add_argument("--out", type=Path, metavar="PATH", help="a .mp4 or .gif to write instead of replacing RUN_DIR/orbit.mp4")
    v.set_defaults(func=cmd_render)

    m = sub.add_parser("eval", help="toy-world metrics of a run (IoU, colour error, recognition)", formatter_class=defaults,
                       description="Grades the run's mesh/mesh.obj and scene against the toy world; only prompts "
                                   "'a {colour} {shape}[, {view} view]' are graded. Settings: the run's eval.* keys.")
    m.add_argument("run_dir", type=Path, help="a run folder")
    m.set_defaults(func=cmd_eval)

    d = sub.add_parser("doctor", help="what is installed, which backends `auto` picks, and whether a prior is found",
                       formatter_class=defaults, description="Exits 1 when the prior is not found.")
    d.add_argument("--prior", default="toy", help="a prior name/folder/hub id to look for")
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
        from .atomic import ENVIRONMENT_ERRNOS
        from .checkpoint import Interrupted
        from .errors import UserError

        if isinstance(e, Interrupted):
            print(f"sds3d: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, UserError):
            print(f"sds3d: error: {' '.join(str(e).split())}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:  # a full disk, no permission: not a bug
            where = f": {e.filename}" if e.filename else ""
            print(f"sds3d: error: {e.strerror}{where}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
