from prunescope.calibration.text import download_hub_pairs, download_hub_text, extract_gensim_text, task_pairs
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec, out = snakemake.params.spec, snakemake.output[0]
    if spec["kind"] == "gensim":
        extract_gensim_text(spec["corpus"], out)
    elif spec["kind"] == "hub":
        download_hub_text(spec["hub_id"], spec["config"], spec["data_files"], spec["split"], spec["text_field"],
                          spec["join"], out)
    elif spec["kind"] == "hub_qa":
        download_hub_pairs(spec["hub_id"], spec["config"], spec["split"], spec["question_field"],
                           spec["answer_field"], spec["rationale_separator"], spec["template"], out)
    else:
        task_pairs(snakemake.input[0], snakemake.params.template, spec["dataset"], out)
