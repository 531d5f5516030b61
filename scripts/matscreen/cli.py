"""The ``matscreen`` command line: one subcommand per stage, the same functions Snakemake calls.

Settings come from a config file (``--config``, default: the shipped ``config/config.yaml``),
validated against the same schema as the workflow's. Run ``matscreen <stage> --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from matscreen import __version__
from matscreen.config import ConfigError, config_hash, load_config

log = logging.getLogger("matscreen")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return load_config(args.config)


def _cmd_ingest(args: argparse.Namespace) -> None:
    from matscreen import ingest

    cfg = _config(args)
    ingest.run(list(args.paths), args.output, args.rejects, cfg["ingest"], cfg["label"], args.existing, config_hash(cfg))


def _cmd_enumerate(args: argparse.Namespace) -> None:
    from matscreen import enumerate as enumerate_stage

    cfg = _config(args)
    settings = dict(cfg["enumerate"])
    if args.families:
        settings["families"] = args.families
    n = args.shards or settings["shards"]
    out = Path(args.output)
    shards = [str(out / "candidates" / f"part-{i}.parquet") for i in range(n)]
    enumerate_stage.run(settings, shards, str(out / "funnel.parquet"), config_hash(cfg))


def _cmd_select(args: argparse.Namespace) -> None:
    from matscreen import targets

    cfg = _config(args)
    targets.run(args.structures, list(args.candidates), args.output, cfg["label"], cfg["seed"], config_hash(cfg))


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
    featurize.run(list(args.inputs), args.output, args.id_column, cfg["featurize"], config_hash(cfg))


def _cmd_train(args: argparse.Namespace) -> None:
    from matscreen import train

    cfg = _config(args)
    out = Path(args.output_dir)
    train.run(args.features, args.labels, str(out / "model.json"), str(out / "cv_metrics.parquet"),
              str(out / "oof_predictions.parquet"), cfg["train"], cfg["seed"], config_hash(cfg))


def _cmd_screen(args: argparse.Namespace) -> None:
    from matscreen import screen

    cfg = _config(args)
    if len(args.candidates) != len(args.features):
        raise SystemExit("matscreen screen: give one --features file per --candidates shard, in the same order")
    out = Path(args.output_dir)
    preds = []
    for i, (cand, feat) in enumerate(zip(args.candidates, args.features)):
        p = out / "predictions" / f"part-{i}.parquet"
        screen.run_predict(args.model, cand, feat, str(p), config_hash(cfg))
        preds.append(str(p))
    screen.run_rank(preds, args.targets, str(out / "ranked.parquet"), str(out / "top.csv"),
                    str(out / "next_to_label.parquet"), cfg["screen"], config_hash(cfg))


def _cmd_report(args: argparse.Namespace) -> None:
    from matscreen import report

    cfg = _config(args)
    r = Path(args.results)
    inputs = {
        "structures": r / "ingest/structures.parquet", "rejects": r / "ingest/rejects.parquet",
        "funnel": r / "enumerate/funnel.parquet", "labels": r / "label/labels.parquet",
        "references": r / "label/references.parquet", "metrics": r / "train/cv_metrics.parquet",
        "oof": r / "train/oof_predictions.parquet", "ranked": r / "screen/ranked.parquet",
        "next_up": r / "screen/next_to_label.parquet",
    }
    report.run({k: str(v) for k, v in inputs.items()}, args.output_dir, cfg["report"], cfg["label"],
               cfg["train"]["target"])


def _cmd_tables(args: argparse.Namespace) -> None:
    from matscreen import tables

    if args.update_readme:
        tables.update_readme(args.update_readme)
    else:
        sys.stdout.write(tables.markdown())


def _cmd_config(args: argparse.Namespace) -> None:
    cfg = _config(args)
    sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matscreen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"matscreen {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", default=None, help="config YAML (default: the shipped config/config.yaml)")
        sp.set_defaults(func=fn)
        return sp

    sp = add("ingest", _cmd_ingest, "read structure files into structures.parquet; bad files go to rejects.parquet")
    sp.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched recursively) or globs")
    sp.add_argument("-o", "--output", default="structures.parquet", help="structures table (default: %(default)s)")
    sp.add_argument("--rejects", default="rejects.parquet", help="rejects table (default: %(default)s)")
    sp.add_argument("--existing", default=None, help="an earlier structures.parquet to de-duplicate against")

    sp = add("enumerate", _cmd_enumerate, "enumerate candidate compositions into sharded Parquet")
    sp.add_argument("-o", "--output", default="enumerate", help="output folder: candidates/part-*.parquet, funnel.parquet")
    sp.add_argument("--shards", type=int, default=None, help="number of shards (default: enumerate.shards)")
    sp.add_argument("--families", nargs="+", default=None, help="families to enumerate (default: enumerate.families)")

    sp = add("select", _cmd_select, "choose the structures to label (ingested + candidate prototypes)")
    sp.add_argument("--structures", required=True, help="structures.parquet from ingest")
    sp.add_argument("--candidates", nargs="+", required=True, help="candidate shards from enumerate")
    sp.add_argument("-o", "--output", default="targets.parquet")

    sp = add("label", _cmd_label, "PySCF periodic DFT labels for structures (cached in the label store)")
    sp.add_argument("inputs", nargs="+", metavar="STRUCTURES", help="structures.parquet / targets.parquet or structure files")
    sp.add_argument("-o", "--output", default="labels.parquet")
    sp.add_argument("--settings", default=None, metavar="FILE.yaml", help="label settings (same keys as the config's label: section)")

    sp = add("featurize", _cmd_featurize, "features for candidates or labeled structures")
    sp.add_argument("inputs", nargs="+", metavar="TABLE", help="candidate shards or a label-targets table")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--id-column", default="candidate_id", choices=["candidate_id", "structure_id"])

    sp = add("train", _cmd_train, "train the LightGBM ensemble with grouped cross-validation")
    sp.add_argument("--features", required=True, help="features of labeled structures")
    sp.add_argument("--labels", required=True, help="labels.parquet")
    sp.add_argument("-o", "--output-dir", default="train", help="writes model.json, cv_metrics.parquet, oof_predictions.parquet")

    sp = add("screen", _cmd_screen, "predict, rank and pick the next candidates to label")
    sp.add_argument("--model", required=True)
    sp.add_argument("--candidates", nargs="+", required=True, help="candidate shards")
    sp.add_argument("--features", nargs="+", required=True, help="feature shards, same order as --candidates")
    sp.add_argument("--targets", required=True, help="label targets table (to skip labeled candidates)")
    sp.add_argument("-o", "--output-dir", default="screen")

    sp = add("report", _cmd_report, "write summary.md and figures from a results folder")
    sp.add_argument("--results", default="results", help="results folder of a run (default: %(default)s)")
    sp.add_argument("-o", "--output-dir", default="results/report")

    sp = add("tables", _cmd_tables, "print the Parquet table contracts as Markdown")
    sp.add_argument("--update-readme", metavar="README.md", default=None,
                    help="rewrite the section between the TABLES markers of this file instead")
    add("config", _cmd_config, "validate a config and print it with defaults filled in")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matscreen.logs import setup_logging

    setup_logging(None, logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
