"""The pretrain and init-model stages: datasets tokenized, packed and ordered into training blocks, models built from
a preset or a config (`build`), and their arguments (`config`).
"""
