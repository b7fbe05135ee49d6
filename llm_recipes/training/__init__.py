"""Trainer helpers every training stage shares: callbacks (`callbacks`) and resuming from a checkpoint, the learning
rate rescaled on resume and the last logged metrics (`resume`).
"""
