"""A run as plain Python: its parameters, building its engine from them, its progress and
its outcome. Prefect calls into this layer; it never imports Prefect."""
