"""Making a model smaller: distillation (`distill`, its trainer `distill_trainer`), quantization (`quantize`),
pruning (`prune`), the compressed-versus-source report (`report`) and the stages' arguments (`config`).
"""
