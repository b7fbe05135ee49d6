"""Options every stage has: what to do with an output folder that already holds a run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OutputOptions:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace whatever output_dir holds (an earlier run, its checkpoints, foreign files) instead of "
            "refusing it; a training stage then starts over."
        },
    )


@dataclass
class ResumeOptions(OutputOptions):
    resume_with_changes: bool = field(
        default=False,
        metadata={
            "help": "Continue the interrupted or finished run in output_dir although learning_rate, max_steps, "
            "num_train_epochs (PPO: num_ppo_steps, total_episodes) or max_grad_norm changed (e.g. a lower rate "
            "after a NaN); the manifest records both values. Any other change needs a new output_dir or "
            "overwrite_output_dir."
        },
    )
