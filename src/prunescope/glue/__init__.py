"""Workflow glue, not the study's library: what the Snakefile, the DVC stages and the Makefile run around the study.

rulecode: the digest of the library code each rule's script runs (a Snakemake param, so edited code reruns its jobs);
stale: removes the files a DVC stage's Snakemake target no longer produces; browser: `make report`'s check that the
HTML report renders in headless Chromium.
"""
