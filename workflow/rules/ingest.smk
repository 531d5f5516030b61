# Stage 1: read CIF/POSCAR/JSON files into structures.parquet; bad files go to rejects.parquet.
# The input list is every file under ingest.inputs, so a new file reruns ingest (nightly refresh).
rule ingest:
    input:
        files=ingest_input_files,
    output:
        structures=paths.STRUCTURES,
        rejects=paths.REJECTS,
    params:
        inputs=config["ingest"]["inputs"],
        settings=config["ingest"],
        existing=config["ingest"]["existing"] or "",
    log:
        "logs/ingest/ingest.log",
    benchmark:
        "results/benchmarks/ingest.tsv"
    conda:
        "../../envs/ingest.yaml"
    script:
        "../../scripts/ingest.py"
