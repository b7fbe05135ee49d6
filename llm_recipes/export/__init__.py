"""The export stage: a trained model (or adapter) made deployable -- merged, sharded, carded, optionally GGUF --
(`folder`), and its arguments (`config`).
"""
