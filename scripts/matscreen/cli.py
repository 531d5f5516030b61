"""The ``matscreen`` command line: one subcommand per stage, the same functions Snakemake calls.

Settings come from a config file (``--config``, default: the shipped ``config/config.yaml``),
validated against the same schema as the workflow's. Run ``matscreen <stage> --help``.

Expected failures (a bad config, a table that breaks its contract, a missing or unreadable
file) end in one line ``matscreen <cmd>: error: <file or key>: <problem>`` and exit status 2;
``--debug`` (or ``MATSCREEN_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from matscreen import __version__, paths
from matscreen.config import ConfigError, config_hash, load_config

log = logging.getLogger("matscreen")


#: Errors that mean bad input, not a bug: reported in one line (ContractError and ConfigError
#: are ValueErrors; FileNotFoundError and PermissionError are OSErrors).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError, OSError)


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return load_config(args.config)


def _shards(paths: list[str], *, candidates: bool) -> list[str]:
    """Shard files from files, folders or globs, checked against the shard set's manifest.

    Candidate shards (``candidates=True``) only come from ``enumerate``, which writes a manifest
    last: a ``part-*`` file without one is an unfinished set, one not listed a stale shard.
    """
    from matscreen.tables import resolve_shards

    return resolve_shards(paths, require_manifest=candidates)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--shards 0`` or ``-2`` would write no shard or crash later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_ingest(args: argparse.Namespace) -> None:
    from matscreen import ingest

    cfg = _config(args)
    ingest.run(list(args.paths), args.output, args.rejects, cfg["ingest"], args.existing, config_hash(cfg))


def _cmd_enumerate(args: argparse.Namespace) -> None:
    from matscreen import enumerate as enumerate_stage

    cfg = _config(args)
    settings = enumerate_stage.resolve_settings({**cfg["enumerate"], **({"families": args.families} if args.families else {})})
    n = args.shards or settings.shards
    out = Path(args.output)
    shards = [str(out / paths.relative(paths.CANDIDATE_SHARD, paths.ENUMERATE).format(shard=i)) for i in range(n)]
    enumerate_stage.run(settings, shards, str(out / paths.relative(paths.FUNNEL, paths.ENUMERATE)), config_hash(cfg))


def _cmd_select(args: argparse.Namespace) -> None:
    from matscreen.label import targets

    cfg = _config(args)
    targets.run(args.structures, _shards(list(args.candidates), candidates=True), args.output, cfg["label"], cfg["seed"],
                config_hash(cfg))


def _cmd_label(args: argparse.Namespace) -> None:
    from matscreen import label

    cfg = _config(args)
    settings = dict(cfg["label"])
    if args.settings:
        with open(args.settings) as fh:
            extra = yaml.safe_load(fh) or {}
        settings.update(extra)
        cfg["label"] = settings
        from matscreen.config import validate

        validate(cfg)  # the settings file obeys the same schema as the config's label: section
        settings = cfg["label"]
    label.label_files(list(args.inputs), args.output, settings, config_hash(cfg))


def _cmd_featurize(args: argparse.Namespace) -> None:
    from matscreen import featurize

    cfg = _config(args)
    inputs = _shards(list(args.inputs), candidates=args.id_column == "candidate_id")
    featurize.run(inputs, args.output, args.id_column, cfg["featurize"], config_hash(cfg))


def _cmd_train(args: argparse.Namespace) -> None:
    from matscreen import train
    from matscreen.label import settings_hash

    cfg = _config(args)
    out = Path(args.output_dir)
    train.run(args.features, args.labels, *(str(out / paths.relative(p, paths.TRAIN)) for p in (paths.MODEL, paths.CV_METRICS, paths.OOF_PREDICTIONS)),
              train.resolve_settings(cfg["train"]), cfg["seed"], config_hash(cfg),
              label_settings_hash=settings_hash(cfg["label"]),
              learning_curve_out=str(out / paths.relative(paths.LEARNING_CURVE, paths.TRAIN)))


def _cmd_screen(args: argparse.Namespace) -> None:
    from matscreen import screen

    cfg = _config(args)
    candidates = _shards(list(args.candidates), candidates=True)
    features = _shards(list(args.features), candidates=False)
    if len(candidates) != len(features):
        raise ValueError(f"--features: {len(features)} file(s) for {len(candidates)} --candidates shard(s); "
                         "give one --features file per --candidates shard, in the same order")
    out = Path(args.output_dir)
    preds = []
    for i, (cand, feat) in enumerate(zip(candidates, features, strict=True)):
        p = out / paths.relative(paths.PREDICTION_SHARD, paths.SCREEN).format(shard=i)
        screen.run_predict(args.model, cand, feat, str(p), config_hash(cfg), screen.settings(cfg["screen"]))
        preds.append(str(p))
    screen.run_rank(preds, args.targets, *(str(out / paths.relative(p, paths.SCREEN)) for p in (paths.RANKED, paths.TOP, paths.NEXT_TO_LABEL)),
                    cfg["screen"], config_hash(cfg))


def _cmd_report(args: argparse.Namespace) -> None:
    from matscreen import report

    cfg = _config(args)
    from matscreen.train import primary_target

    report.run(report.inputs_under(args.results), args.output_dir, cfg["report"], cfg["label"], primary_target(cfg))


def _cmd_tables(args: argparse.Namespace) -> None:
    from matscreen import tables

    if args.update_readme:
        tables.update_readme(args.update_readme)
    else:
        sys.stdout.write(tables.markdown())


def _cmd_export_labels(args: argparse.Namespace) -> None:
    from matscreen import reference_set

    cfg = load_config(args.config) if args.config else load_config()
    s = cfg["label"]
    kp = s["kpoints"]
    gamma_rule = "" if kp["gamma_only_min_sites"] is None else f"; cells of {kp['gamma_only_min_sites']} atoms or more: Gamma only"
    theory = (f"{s['xc']}, basis {s['basis']}, pseudopotential {s['pseudo']}, {s['density_fit']}, "
              f"{s['ke_cutoff']} Ha cutoff, {s['smearing']['method']} smearing {s['smearing']['width']} Ha, "
              f"k-point density {kp['kdensity']} per 1/A (references {kp['reference_kdensity']}{gamma_rule}), "
              f"relax {s['relax']}")
    stats = reference_set.export(args.targets, args.labels, args.references, args.output, args.config)
    from matscreen.atomic import atomic_path

    with atomic_path(Path(args.output) / "README.md") as tmp:
        tmp.write_text(reference_set.readme(stats, theory))


def _cmd_config(args: argparse.Namespace) -> None:
    cfg = _config(args)
    sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))


def _name(path: str) -> str:
    """A result's file (or folder) name: the command line writes into the current folder by default."""
    return os.path.basename(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matscreen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"matscreen {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (also MATSCREEN_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", default=None, help="config YAML (default: the shipped config/config.yaml)")
        sp.set_defaults(func=fn)
        return sp

    sp = add("ingest", _cmd_ingest, "read structure files into structures.parquet; bad files go to rejects.parquet")
    sp.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched recursively) or globs")
    sp.add_argument("-o", "--output", default=_name(paths.STRUCTURES), help="structures table (default: %(default)s)")
    sp.add_argument("--rejects", default=_name(paths.REJECTS), help="rejects table (default: %(default)s)")
    sp.add_argument("--existing", default=None, help="an earlier structures.parquet to de-duplicate against")

    sp = add("enumerate", _cmd_enumerate, "enumerate candidate compositions into sharded Parquet")
    sp.add_argument("-o", "--output", default=_name(paths.ENUMERATE),
                    help=f"output folder: {paths.relative(paths.CANDIDATE_SHARD, paths.ENUMERATE)}, {_name(paths.FUNNEL)}")
    sp.add_argument("--shards", type=_positive_int, default=None, help="number of shards, at least 1 (default: enumerate.shards)")
    sp.add_argument("--families", nargs="+", default=None, help="families to enumerate (default: enumerate.families)")

    sp = add("select", _cmd_select, "choose the structures to label (ingested + candidate prototypes)")
    sp.add_argument("--structures", required=True, help=f"{_name(paths.STRUCTURES)} from ingest")
    sp.add_argument("--candidates", nargs="+", required=True, help="candidate shards from enumerate")
    sp.add_argument("-o", "--output", default=_name(paths.LABEL_TARGETS))

    sp = add("label", _cmd_label, "PySCF periodic DFT labels for structures (cached in the label store)")
    sp.add_argument("inputs", nargs="+", metavar="STRUCTURES", help="structures.parquet / targets.parquet or structure files")
    sp.add_argument("-o", "--output", default=_name(paths.LABELS))
    sp.add_argument("--settings", default=None, metavar="FILE.yaml", help="label settings (same keys as the config's label: section)")

    sp = add("featurize", _cmd_featurize, "features for candidates or labeled structures")
    sp.add_argument("inputs", nargs="+", metavar="TABLE", help="candidate shards or a label-targets table")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--id-column", default="candidate_id", choices=["candidate_id", "structure_id"])

    sp = add("train", _cmd_train, "train the LightGBM ensemble with grouped cross-validation")
    sp.add_argument("--features", required=True, help="features of labeled structures")
    sp.add_argument("--labels", required=True, help=_name(paths.LABELS))
    sp.add_argument("-o", "--output-dir", default=_name(paths.TRAIN),
                    help="writes " + ", ".join(_name(p) for p in (paths.MODEL, paths.CV_METRICS, paths.OOF_PREDICTIONS, paths.LEARNING_CURVE)))

    sp = add("screen", _cmd_screen, "predict, rank and pick the next candidates to label")
    sp.add_argument("--model", required=True)
    sp.add_argument("--candidates", nargs="+", required=True, help="candidate shards")
    sp.add_argument("--features", nargs="+", required=True, help="feature shards, same order as --candidates")
    sp.add_argument("--targets", required=True, help="label targets table (to skip labeled candidates)")
    sp.add_argument("-o", "--output-dir", default=_name(paths.SCREEN))

    sp = add("report", _cmd_report, "write summary.md and figures from a results folder")
    sp.add_argument("--results", default=paths.RESULTS, help="results folder of a run (default: %(default)s)")
    sp.add_argument("-o", "--output-dir", default=paths.REPORT)

    sp = add("tables", _cmd_tables, "print the Parquet table contracts as Markdown")
    sp.add_argument("--update-readme", metavar="README.md", default=None,
                    help="rewrite the section between the TABLES markers of this file instead")
    sp = add("export-labels", _cmd_export_labels, "export a labeled run as a reference label set (resources/labels/)")
    sp.add_argument("--targets", required=True, help="label targets table of the run")
    sp.add_argument("--labels", required=True, help="labels table of the run (gathered: formation energies, hulls)")
    sp.add_argument("--references", required=True, help="references table of the run")
    sp.add_argument("-o", "--output", default="resources/labels", help="output folder")
    add("config", _cmd_config, "validate a config and print it with defaults filled in")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matscreen.logs import setup_logging

    setup_logging(None, logging.DEBUG if args.verbose else logging.INFO)
    if args.debug or os.environ.get("MATSCREEN_DEBUG", "") not in ("", "0"):
        args.func(args)
        return 0
    try:
        args.func(args)
    except EXPECTED_ERRORS as exc:
        sys.stderr.write(f"matscreen {args.command}: error: {error_line(exc)}\n")
        return 2
    return 0


def error_line(exc: BaseException) -> str:
    """One line for an expected error: our messages already name the file/key; OSErrors get theirs."""
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    elif isinstance(exc, KeyError):
        text = str(exc.args[0]) if exc.args else "KeyError"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
