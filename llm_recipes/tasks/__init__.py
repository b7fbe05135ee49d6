"""Task fine-tuning (recipes/finetune_task.py): text classification, token classification (NER) and extractive
question answering over `transformers.Trainer`, with LoRA, partial freezing, layer-wise learning-rate decay, class
weights and an Optuna hyperparameter search.

    data.py      rows in: columns, label names <-> ids, SQuAD answers checked
    labels.py    label sets, B-/I- continuation, class weights
    features.py  rows -> model features (tags aligned to sub-word tokens, QA windows with stride)
    qa.py        QA windows, answer spans and the extractive QA pipeline (self-contained: shipped with QA models)
    metrics.py   compute_metrics per task, over our local `evaluate` metric modules
    models.py    the task model (preset or saved), freezing, LoRA, what a pipeline needs saved
    training.py  the Trainer: class-weighted loss, layer-wise learning-rate decay
    build.py     data -> features -> model -> trainer, from the config (and what was built, for the summary)
    summary.py   the tables a run or a search ends with (TaskSummary, SearchSummary)
    search.py    the `search:` section, Optuna space and objective, best_config.yaml
    options.py   config checks and derived defaults
    config.py    the stage's arguments (FinetuneTaskArguments)
"""

from llm_recipes.tasks.data import CLASSIFICATION, QUESTION_ANSWERING, TASKS, TOKEN_CLASSIFICATION

__all__ = ["CLASSIFICATION", "QUESTION_ANSWERING", "TASKS", "TOKEN_CLASSIFICATION"]
