"""Where results go: the journal, the Parquet dataset and the crash points that test it."""
