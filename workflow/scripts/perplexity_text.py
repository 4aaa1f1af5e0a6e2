from prunescope.calibration.text import download_hub_documents, extract_gensim_text
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec, out = snakemake.params.spec, snakemake.output[0]
    if spec["kind"] == "gensim_heldout":
        extract_gensim_text(spec["corpus"], out, part="heldout")
    else:
        download_hub_documents(spec["hub_id"], spec["config"], spec["data_files"], spec["split"], spec["text_field"],
                               spec["documents"], out)
