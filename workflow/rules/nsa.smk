# Neuron Semantic Attribution on its own seeded subsample of each of the grid's NSA datasets (the grid's nsa_examples):
# influential words and the neuron-word association with causal importance on the dense model, then every pruned
# variant compared with it, and the causal ablation curve.


rule nsa_words:
    """Influential words by occlusion (nsa.attribution) on the dense model, grouped by the label they push toward."""
    input:
        model="data/models/{model}",
        records="data/datasets/{dataset}.jsonl",
    output:
        "results/nsa/{model}/{dataset}/words.json",
    log:
        "logs/nsa_words/{model}/{dataset}.log",
    benchmark:
        "benchmarks/nsa_words/{model}/{dataset}.tsv"
    priority: 1  # NSA's words -> association -> causal check: the longest chain of a run, started first
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    params:
        code=library_code("nsa_words.py"),  # the library code it runs (common.smk)
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        model_spec=lambda wc: config["models"][wc.model],
        nsa=config["nsa"],
        examples=GRID["nsa_examples"],
        sample_seed=config["evaluation"]["subsample_seed"],
    script:
        "../scripts/nsa_words.py"


rule nsa_association:
    """The learned non-negative sparse neuron-word association A of each studied MLP layer, with each pair's causal
    importance (dense model, one streaming pass)."""
    input:
        model="data/models/{model}",
        records="data/datasets/{dataset}.jsonl",
        words="results/nsa/{model}/{dataset}/words.json",
    output:
        association="results/nsa/{model}/{dataset}/association.safetensors",
        info="results/nsa/{model}/{dataset}/association.json",
    log:
        "logs/nsa_association/{model}/{dataset}.log",
    benchmark:
        "benchmarks/nsa_association/{model}/{dataset}.tsv"
    priority: 1  # NSA's words -> association -> causal check: the longest chain of a run, started first
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    params:
        code=library_code("nsa_association.py"),  # the library code it runs (common.smk)
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        model_spec=lambda wc: config["models"][wc.model],
        nsa=config["nsa"],
        examples=GRID["nsa_examples"],
        sample_seed=config["evaluation"]["subsample_seed"],
    script:
        "../scripts/nsa_association.py"


rule nsa_compare:
    """Matched neurons' activation drops on one pruned variant, per word group, and semantic retention."""
    input:
        model="data/models/{model}",
        records="data/datasets/{dataset}.jsonl",
        association="results/nsa/{model}/{dataset}/association.safetensors",
        pruned="results/pruned/{model}/{method}/{pattern}/{calib}",
    output:
        "results/nsa/{model}/{dataset}/{method}/{pattern}/{calib}.json",
    log:
        "logs/nsa_compare/{model}/{dataset}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/nsa_compare/{model}/{dataset}/{method}/{pattern}/{calib}.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    params:
        code=library_code("nsa_compare.py"),  # the library code it runs (common.smk)
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        model_spec=lambda wc: config["models"][wc.model],
        nsa=config["nsa"],
        examples=GRID["nsa_examples"],
        sample_seed=config["evaluation"]["subsample_seed"],
    script:
        "../scripts/nsa_compare.py"


rule nsa_causal:
    """The causal curve: gold margin and accuracy with the K best-matched neurons ablated (zero, mean) vs random
    draws of as many neurons of the same layers, K = 1, 2, 4, ..."""
    input:
        model="data/models/{model}",
        records="data/datasets/{dataset}.jsonl",
        association="results/nsa/{model}/{dataset}/association.safetensors",
    output:
        "results/nsa/{model}/{dataset}/causal.json",
    log:
        "logs/nsa_causal/{model}/{dataset}.log",
    benchmark:
        "benchmarks/nsa_causal/{model}/{dataset}.tsv"
    priority: 1  # NSA's words -> association -> causal check: the longest chain of a run, started first
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
    params:
        code=library_code("nsa_causal.py"),  # the library code it runs (common.smk)
        model_spec=lambda wc: config["models"][wc.model],
        template=lambda wc: config["datasets"][wc.dataset]["template"],
        nsa=config["nsa"],
        examples=GRID["nsa_examples"],
        sample_seed=config["evaluation"]["subsample_seed"],
    script:
        "../scripts/nsa_causal.py"


rule prune_guided:
    """Prune one variant with the protected category's NSA-matched neurons exempt (at the same sparsity)."""
    input:
        model="data/models/{model}",
        calibration=calibration_input,
        associations=lambda wc: nsa_associations(wc.model, wc.protect),
    output:
        artifact=directory("results/guided/pruned/{model}/{protect}/{method}/{pattern}/{calib}"),
        measurements="results/guided/prune_runs/{model}/{protect}/{method}/{pattern}/{calib}.json",
    log:
        "logs/prune_guided/{model}/{protect}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/prune_guided/{model}/{protect}/{method}/{pattern}/{calib}.tsv"
    conda:
        "../envs/prunescope.yaml"
    threads: config["runtime"]["cpu_threads"]
    resources:
        gpu=1,
        mem_mb=planned("prune"),  # host memory (MB), from the memory plan (common.smk)
        gpu_mem_mb=planned("prune", "gpu"),
    params:
        code=library_code("prune_guided.py"),  # the library code it runs (common.smk)
        model_spec=lambda wc: config["models"][wc.model],
        # the options PruneOptions.from_params reads from config["pruning"]: listed as rerun triggers
        method_options=lambda wc: config["pruning"][wc.method],
        owl=config["pruning"]["owl"],
        batch_size=config["pruning"]["calibration_batch_size"],
        neurons_per_word=config["nsa"]["neurons_per_word"],
    script:
        "../scripts/prune_guided.py"


use rule evaluate_dense as evaluate_guided with:
    input:
        model="data/models/{model}",
        tasks=TASK_DIRS,
        pruned="results/guided/pruned/{model}/{protect}/{method}/{pattern}/{calib}",
    output:
        expand(
            "results/guided/eval/{{model}}/{{protect}}/{{method}}/{{pattern}}/{{calib}}/{dataset}.json",
            dataset=GRID["datasets"],
        ),
    log:
        "logs/evaluate_guided/{model}/{protect}/{method}/{pattern}/{calib}.log",
    benchmark:
        "benchmarks/evaluate_guided/{model}/{protect}/{method}/{pattern}/{calib}.tsv"


rule nsa_report:
    """NSA tables (drops vs accuracy drops and their correlation, the causal curve, the matched neurons' share of
    the words' effect by layer, guided vs plain pruning), headline numbers, the drop scatter, the causal curve and
    one token heatmap per NSA dataset."""
    input:
        results=STUDIED_EVAL_FILES,
        guided=GUIDED_EVAL_FILES,
        compare=NSA_COMPARE_FILES,
        causal=NSA_CAUSAL_FILES,
        associations=NSA_ASSOCIATION_INFO_FILES,
    output:
        drops=report(
            f"{REPORTS}/tables/nsa.csv",
            caption="../report/nsa_table.rst",
            category="NSA",
            subcategory="Neuron drops vs accuracy",
        ),
        guided=report(
            f"{REPORTS}/tables/nsa_guided.csv",
            caption="../report/nsa_guided_table.rst",
            category="NSA",
            subcategory="NSA-guided pruning",
        ),
        markdown=f"{REPORTS}/tables/nsa.md",
        metrics=f"{REPORTS}/nsa.json",
        scatter_png=report(
            f"{REPORTS}/figures/nsa/drop_scatter.png",
            caption="../report/nsa_drop_scatter.rst",
            category="NSA",
            subcategory="Neuron drops vs accuracy",
        ),
        scatter_svg=f"{REPORTS}/figures/nsa/drop_scatter.svg",
        guided_png=report(
            f"{REPORTS}/figures/nsa/guided.png",
            caption="../report/nsa_guided.rst",
            category="NSA",
            subcategory="NSA-guided pruning",
        ),
        guided_svg=f"{REPORTS}/figures/nsa/guided.svg",
        causal_png=report(
            f"{REPORTS}/figures/nsa/causal_curve.png",
            caption="../report/nsa_causal_curve.rst",
            category="NSA",
            subcategory="Causal curve",
        ),
        causal_svg=f"{REPORTS}/figures/nsa/causal_curve.svg",
        pairing_png=report(
            f"{REPORTS}/figures/nsa/pairing.png",
            caption="../report/nsa_pairing.rst",
            category="NSA",
            subcategory="Causal curve",
        ),
        pairing_svg=f"{REPORTS}/figures/nsa/pairing.svg",
        heatmap_png=report(
            [f"{REPORTS}/figures/nsa/heatmap_{m}_{d}.png" for m, d in NSA_HEATMAPS],
            caption="../report/nsa_heatmap.rst",
            category="NSA",
            subcategory="Token heatmaps",
        ),
        heatmap_svg=[f"{REPORTS}/figures/nsa/heatmap_{m}_{d}.svg" for m, d in NSA_HEATMAPS],
    log:
        "logs/report/nsa_report.log",
    benchmark:
        "benchmarks/report/nsa_report.tsv"
    conda:
        "../envs/prunescope.yaml"
    params:
        code=library_code("nsa_report.py"),  # the library code it runs (common.smk)
        evaluation=config["evaluation"],
        limit=EVAL_LIMIT,
        pruning=config["pruning"],
        heatmap_inputs=NSA_HEATMAP_INPUTS,
    script:
        "../scripts/nsa_report.py"
