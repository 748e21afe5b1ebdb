# The synthetic demo cohort, written as a BIDS dataset under results/<dataset>/bids.


rule demo_cohort:
    output:
        directory(f"{RESULTS}/{{dataset}}/bids"),
    log:
        log_path("demo_cohort", "{dataset}"),
    benchmark:
        benchmark_path("demo_cohort", "{dataset}")
    wildcard_constraints:
        dataset=name_regex(DEMO_DATASETS),
    conda:
        ENV_CPU
    threads: 2
    resources:
        mem_mb=5000,
        runtime=20,
    params:
        subjects=lambda wc: config["datasets"][wc.dataset]["subjects"],
        t1w_only=lambda wc: config["datasets"][wc.dataset]["t1w_only"],
        seed=lambda wc: config["datasets"][wc.dataset]["seed"],
        ad_fraction=lambda wc: config["datasets"][wc.dataset]["ad_fraction"],
        tracers=lambda wc: " ".join(config["datasets"][wc.dataset]["tracers"]),
    shell:
        magicflow_command(
            "demo-cohort {output} --subjects {params.subjects} --t1w-only {params.t1w_only} --seed {params.seed}"
            " --ad-fraction {params.ad_fraction} --tracers {params.tracers} --workers {threads}"
        )
