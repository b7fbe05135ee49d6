"""The pretrain and init-model stages: datasets tokenized, packed and ordered into training blocks, models built from
a preset or a config (`build`), the trainer put together (`trainer`), the recipe's checks (`checks`), the run's
summary (`summary`), their arguments (`config`), and the tokenize stage on a Ray cluster (`ray_shards`).
"""
