# Calibration samples: seeded token windows, identical for every method pruned with the same key.


rule sample_calibration:
    """The reference sampling rule: random documents longer than seqlen, a random seqlen window of each."""
    input:
        text=lambda wc: f"data/text/{parse_calibration_key(wc.calib)['source']}.jsonl",
        model="data/models/{model}",
    output:
        ids="data/calibration/{model}/{calib}.safetensors",
        manifest="data/calibration/{model}/{calib}.json",
    params:
        key=lambda wc: parse_calibration_key(wc.calib),
    log:
        "logs/sample_calibration/{model}/{calib}.log",
    script:
        "../scripts/sample_calibration.py"
