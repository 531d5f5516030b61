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
        # only what decides label_supported, so other label settings do not rerun ingest
        label_settings={k: config["label"][k] for k in ("basis", "pseudo")},
        existing=config["ingest"].get("existing") or "",
    log:
        "logs/ingest/ingest.log",
    benchmark:
        paths.BENCHMARKS + "/ingest.tsv"
    conda:
        "../../envs/ingest.yaml"
    script:
        "../../scripts/ingest.py"
