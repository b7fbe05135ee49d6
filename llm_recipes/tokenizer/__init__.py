"""The train-tokenizer stage: BPE and unigram tokenizers trained (or retrained) on a dataset with a fertility report
(`training`), and its arguments (`config`).
"""
