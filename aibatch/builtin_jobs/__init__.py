"""The job files shipped with aibatch: `--job summarize`, `--job classify`."""
