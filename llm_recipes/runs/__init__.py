"""What a stage run claims, writes and records: the run manifest (`manifest`), the output folder claimed and
abandoned (`outputs`), secrets kept out of what is written (`secrets`) and the run summary (`summary`).
"""
