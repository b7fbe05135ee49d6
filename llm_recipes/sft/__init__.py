"""The SFT stage: its trainer (`build`), checks that anything is supervised and the run summary (`summary`), and its
arguments (`config`)."""
