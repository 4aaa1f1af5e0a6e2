"""An NSA rule's job as the stages take it (nsa.options): the model, the examples and the options, from the rule's
inputs and params (workflow/rules/nsa.smk), built once per job."""

from __future__ import annotations

from prunescope.nsa.options import NsaData, NsaModel, NsaOptions
from prunescope.runlog import job_device


def nsa_job(snakemake) -> tuple[NsaModel, NsaData, NsaOptions]:
    """(model, data, options) of the running NSA job; the pruned variant is applied where the rule has one."""
    inputs, params = snakemake.input, snakemake.params
    model = NsaModel.from_spec(inputs.model, params.model_spec, job_device(snakemake.threads),
                               snakemake.config["offload"], inputs.get("pruned"))
    return (model, NsaData(inputs.records, params.template, params.examples, params.sample_seed),
            NsaOptions.from_params(params.nsa))
