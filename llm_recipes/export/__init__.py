"""The export stage: a trained model (or adapter) made deployable -- merged, sharded, carded, optionally GGUF --
(`folder`), the export folder written from its source with the table the stage ends with (`build`), its arguments
(`config`) and their checks (`checks`).
"""
