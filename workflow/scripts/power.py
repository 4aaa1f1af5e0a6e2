from prunescope.io import read_json
from prunescope.reporting.power import Design, power_table, write_power
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    design = Design(**p.claims["design"], alpha=p.claims["alpha"], power=p.claims["power"], tests=p.tests)
    available = {(manifest := read_json(path))["dataset"]: manifest["n"] for path in snakemake.input.manifests}
    write_power(power_table(available, p.categories, p.limit, design), design, snakemake.output.csv,
                snakemake.output.markdown)
