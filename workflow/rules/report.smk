# Summary report (Markdown, figures, the top candidates as a sortable HTML table); `snakemake --report`
# embeds the same files with the captions of workflow/report/ (the landing page: workflow.rst).
# It also records a run snapshot in report.history (not an output: it must outlive reruns) and
# starts summary.md with what changed since the previous run (nightly refresh).
rule report:
    input:
        structures=rules.ingest.output.structures,
        rejects=rules.ingest.output.rejects,
        funnel=rules.enumerate.output.funnel,
        labels=rules.gather_labels.output.labels,
        references=rules.gather_labels.output.references,
        metrics=rules.train.output.metrics,
        oof=rules.train.output.oof,
        learning_curve=rules.train.output.learning_curve,
        model=rules.train.output.model,
        ranked=rules.rank.output.ranked,
        next_up=rules.rank.output.next,
        targets=paths.round_targets(FINAL),
        rounds=paths.ROUNDS_TABLE,
    output:
        summary=report(paths.SUMMARY, caption="../report/summary.rst", category="Summary"),
        parity=report(
            paths.PARITY_PLOT, caption="../report/parity.rst", category="Model", labels={"figure": "parity per family"}
        ),
        calibration=report(
            paths.CALIBRATION_PLOT,
            caption="../report/calibration.rst",
            category="Model",
            labels={"figure": "uncertainty calibration"},
        ),
        importance=report(
            paths.IMPORTANCE_PLOT,
            caption="../report/feature_importance.rst",
            category="Model",
            labels={"figure": "feature importance"},
        ),
        learning_curve=report(
            paths.LEARNING_CURVE_PLOT,
            caption="../report/learning_curve.rst",
            category="Model",
            labels={"figure": "learning curve"},
        ),
        funnel=report(
            paths.FUNNEL_PLOT, caption="../report/funnel.rst", category="Candidates", labels={"figure": "funnel"}
        ),
        predictions=report(
            paths.PREDICTIONS_PLOT,
            caption="../report/predictions.rst",
            category="Screening",
            labels={"figure": "predictions per family"},
        ),
        rounds=report(
            paths.ROUNDS_PLOT,
            caption="../report/rounds.rst",
            category="Model",
            labels={"figure": "error per round"},
        ),
        top=report(
            paths.TOP_TABLE, caption="../report/top.rst", category="Screening", labels={"figure": "top candidates"}
        ),
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
        settings=config["report"],
        label_settings=config["label"],
        target=config["screen"]["rank_by"]
        or ([config["train"]["target"]] if isinstance(config["train"]["target"], str) else config["train"]["target"])[
            0
        ],
    log:
        "logs/report/report.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../../scripts/report.py"
