"""The SFT stage: checks that anything is supervised and the run summary (`summary`), and its arguments (`config`)."""
