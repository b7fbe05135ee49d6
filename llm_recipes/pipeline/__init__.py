"""The pipeline recipe's vocabulary: plan (config -> stages), state (resume), runner, report and dry run."""

from llm_recipes.pipeline.plan import PipelineSettings, StagePlan, build_plan, read_pipeline_config
from llm_recipes.pipeline.report import StageResult, format_results

__all__ = ["PipelineSettings", "StagePlan", "StageResult", "build_plan", "format_results", "read_pipeline_config"]
