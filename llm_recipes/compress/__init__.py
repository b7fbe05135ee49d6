"""Making a model smaller: distillation, quantization and pruning, each stage's recipe reading its checks and
building steps from here.

- `config`: the three stages' arguments (`DistillArguments`, `QuantizeArguments`, `PruneArguments`)
- `distill`: distillation losses and the student's construction; `distill_trainer`: our logits-distillation trainer
- `distill_checks`: the distill stage's config checks (parse_args); `distill_build`: teacher, student, data, trainer,
  the teacher comparison and the labels-only baseline
- `quantize`: quantization specs, checks and the quantized folder; `quantize_build`: the report data, the
  full-precision source and the report
- `prune`: pruning methods and sparsity; `prune_checks`: the prune stage's config checks; `prune_build`: source,
  calibration and pruning; `prune_recovery`: the recovery fine-tune; `prune_report`: the report and summary
- `report`: the compressed-versus-source comparison (compression_report.json)
- `summaries`: typed summaries (`DistillSummary`, `QuantizeSummary`) whose `as_summary()` is the recorded table
"""
