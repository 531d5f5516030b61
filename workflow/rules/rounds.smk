# Active-learning rounds (rounds.count > 1). Round r >= 1: the acquire checkpoint reads round r-1's
# candidate predictions and plans round r's labels (its new targets are label jobs like round 0's,
# under results/rounds/<r>/label/); the state after each round but the last (labels, features,
# model, candidate predictions) is computed under results/rounds/<r>/ by the stage rules' own
# scripts. The final round's state is the stage folders' (rules gather_labels, train, rank).


checkpoint acquire:
    input:
        predictions=lambda w: expand(paths.ROUND_PREDICTION_SHARD, round=int(w.round) - 1, shard=SHARDS),
        candidates=rules.enumerate.output.shards,
        previous=lambda w: paths.round_targets(int(w.round) - 1),
        labels=lambda w: paths.ROUND_LABELS.format(round=int(w.round) - 1),
        # compounds the model trains on from train.external_labels are not chosen again
        external=external_labels_table,
    output:
        targets=paths.ROUND_TARGETS,
        references=paths.ROUND_REFERENCE_TARGETS,
    params:
        # rounds.count is left out: raising it must not redo the earlier rounds
        rounds={k: v for k, v in config["rounds"].items() if k != "count"},
        label=config["label"],
        screen=config["screen"],
        stability=config["train"]["stability"],
    log:
        "logs/rounds/{round}/acquire.log",
    conda:
        "../../envs/label.yaml"
    script:
        "../../scripts/acquire.py"


use rule label_structure as label_structure_round with:
    input:
        targets=paths.ROUND_TARGETS,
    output:
        paths.ROUND_LABEL_STRUCTURE,
    log:
        "logs/rounds/{round}/label/structures/{structure_id}.log",
    benchmark:
        "results/benchmarks/rounds/{round}/label/{structure_id}.tsv"


use rule label_structure as label_competing_round with:
    input:
        targets=paths.ROUND_TARGETS,
    output:
        paths.ROUND_LABEL_COMPETING,
    log:
        "logs/rounds/{round}/label/competing/{structure_id}.log",
    benchmark:
        "results/benchmarks/rounds/{round}/label/competing-{structure_id}.tsv"


use rule label_reference as label_reference_round with:
    output:
        paths.ROUND_LABEL_REFERENCE,
    log:
        "logs/rounds/{round}/label/references/{element}.log",
    benchmark:
        "results/benchmarks/rounds/{round}/label/ref-{element}.tsv"


use rule gather_labels as gather_labels_round with:
    input:
        targets=round_plan,
        reference_targets=lambda w: paths.round_reference_targets(w.round),
        labels=lambda w: round_label_outputs(w.round),
        references=lambda w: round_reference_outputs(w.round),
    output:
        labels=paths.ROUND_LABELS,
        references=paths.ROUND_REFERENCES,
    log:
        "logs/rounds/{round}/gather_labels.log",


use rule featurize_labeled as featurize_labeled_round with:
    input:
        round_plan,
    output:
        paths.ROUND_LABELED_FEATURES,
    log:
        "logs/rounds/{round}/featurize_labeled.log",


use rule train as train_round with:
    input:
        unpack(external_label_inputs),
        features=paths.ROUND_LABELED_FEATURES,
        labels=paths.ROUND_LABELS,
        targets=round_plan,
    output:
        model=paths.ROUND_MODEL,
        metrics=paths.ROUND_CV_METRICS,
        oof=paths.ROUND_OOF_PREDICTIONS,
        learning_curve=paths.ROUND_LEARNING_CURVE,
    log:
        "logs/rounds/{round}/train.log",
    benchmark:
        "results/benchmarks/rounds/{round}/train.tsv"


use rule predict as predict_round with:
    input:
        model=paths.ROUND_MODEL,
        candidates=paths.CANDIDATE_SHARD,
        features=paths.CANDIDATE_FEATURES,
    output:
        paths.ROUND_PREDICTION_SHARD,
    log:
        "logs/rounds/{round}/predict-{shard}.log",


# What each round chose, cost and learned: results/rounds.parquet (one row per round).
rule rounds:
    input:
        plans=[paths.round_targets(r) for r in range(FINAL + 1)],
        labels=rules.gather_labels.output.labels,
        predictions=expand(paths.ROUND_PREDICTION_SHARD, round=EARLIER, shard=SHARDS),
        metrics=[paths.round_state(paths.CV_METRICS, r, FINAL) for r in range(FINAL + 1)],
    output:
        paths.ROUNDS_TABLE,
    params:
        settings=config["rounds"],
        screen=config["screen"],
        shards=len(SHARDS),
    log:
        "logs/rounds/rounds.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/rounds.py"
