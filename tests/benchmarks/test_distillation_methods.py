"""The distillation-methods benchmark's own logic: how a method name becomes the main job's options, and the
side-by-side table read from evaluation reports shaped as the pipeline writes them."""

from __future__ import annotations

from rich.console import Console

from benchmarks.distillation_methods import method_options, print_comparison, tuned_rows


def report(accuracy: dict[str, float], promoted: dict[str, bool]) -> dict:
    table = []
    for style, value in accuracy.items():
        for config in ("base_trigger", "base_prompt", "tuned_trigger"):
            table.append({"style": style, "config": config, "style_score": 0.5, "sense": 0.8, "loops": 0.0,
                          "style_accuracy": value if config == "tuned_trigger" else 0.1})
    return {"evaluation": {"table": table, "verdicts": {s: {"promoted": p} for s, p in promoted.items()}}}


def test_a_method_name_sets_the_training_method_and_the_rejected_side():
    assert method_options("supervised", 3).method == "supervised"
    dpo = method_options("dpo:base_model", 5)
    assert (dpo.method, dpo.pairs_rejected, dpo.seed, dpo.suffix) == ("dpo", "base_model", 5, "dpo")


def test_the_table_reads_the_tuned_rows_and_gives_each_methods_accuracy_ratio_to_the_baseline():
    results = {"supervised": tuned_rows(report({"温柔": 0.5, "毒舌": 0.4}, {"温柔": True, "毒舌": False})),
               "dpo:other_style": tuned_rows(report({"温柔": 0.75, "毒舌": 0.8}, {"温柔": True, "毒舌": True}))}
    assert results["supervised"]["毒舌"]["style_accuracy"] == 0.4 and not results["supervised"]["毒舌"]["promoted"]
    console = Console(record=True, width=200)
    print_comparison(results, {"supervised": 212.0, "dpo:other_style": None}, console)
    lines = console.export_text().splitlines()
    row = next(line for line in lines if line.startswith("dpo:other_style") and "毒舌" in line)
    assert row.split()[2:] == ["0.80", "0.50", "0.80", "0.00", "yes", "2.00x"]
    assert "training time: supervised 212s, dpo:other_style ?" in lines
