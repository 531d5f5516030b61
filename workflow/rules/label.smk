# Stage 3: PySCF labels. A checkpoint chooses the structures, marks those the label store already
# holds (no job) and estimates the resources of the others; each remaining structure and elemental
# reference is its own job, and a gather step reads job files and store entries and computes
# formation energies and hulls. The controller never imports PySCF.
checkpoint select_label_targets:
    input:
        structures=rules.ingest.output.structures,
        candidates=rules.enumerate.output.shards,
    output:
        targets="results/label/targets.parquet",
        references="results/label/reference_targets.parquet",
    params:
        settings=config["label"],
        seed=config["seed"],
    log:
        "logs/label/select_label_targets.log",
    conda:
        "../../envs/label.yaml"
    script:
        "../../scripts/select_label_targets.py"


# One periodic DFT calculation of a target the store did not hold when the targets were chosen
# (a hit found later, e.g. written by another run meanwhile, is still copied, never recomputed).
rule label_structure:
    input:
        targets="results/label/targets.parquet",
    output:
        "results/label/structures/{structure_id}.parquet",
    params:
        settings=config["label"],
    threads: config["label"]["resources"]["threads"]
    resources:
        mem_mb=label_mem_mb,
        runtime=label_runtime,
    retries: config["label"]["resources"]["retries"]
    log:
        "logs/label/structures/{structure_id}.log",
    benchmark:
        "results/benchmarks/label/{structure_id}.tsv"
    conda:
        "../../envs/label.yaml"
    script:
        "../../scripts/label_structure.py"


# A competing binary phase (e.g. TiO2 rutile for SrTiO3): the same calculation as label_structure,
# its own rule so that a cluster groups these many small jobs like the references.
use rule label_structure as label_competing with:
    output:
        "results/label/competing/{structure_id}.parquet",
    log:
        "logs/label/competing/{structure_id}.log",
    benchmark:
        "results/benchmarks/label/competing-{structure_id}.tsv"


# Elemental reference (standard elemental solid, or diatomic gas in a box) with the same settings.
rule label_reference:
    output:
        "results/label/references/{element}.parquet",
    params:
        settings=config["label"],
    threads: config["label"]["resources"]["threads"]
    retries: config["label"]["resources"]["retries"]
    log:
        "logs/label/references/{element}.log",
    benchmark:
        "results/benchmarks/label/ref-{element}.tsv"
    conda:
        "../../envs/label.yaml"
    script:
        "../../scripts/label_reference.py"


# Gather: one labels table with formation energies against the references and energies above
# the hull of each chemical system (labels, competing phases and references of one settings hash).
# With active-learning rounds this is the final round's plan: every label of every round.
rule gather_labels:
    input:
        targets=paths.round_targets(FINAL),
        reference_targets=paths.round_reference_targets(FINAL),
        labels=label_outputs,
        references=reference_outputs,
    output:
        labels="results/label/labels.parquet",
        references="results/label/references.parquet",
    params:
        settings=config["label"],
    log:
        "logs/label/gather_labels.log",
    conda:
        "../../envs/label.yaml"
    script:
        "../../scripts/gather_labels.py"
