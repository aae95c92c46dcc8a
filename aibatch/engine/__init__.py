"""The engine: the Messages API behind one interface, the retry policy, pacing and the
processor that runs rows at the limit. Plain Python: it never imports Prefect."""
