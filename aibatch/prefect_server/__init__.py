"""What aibatch keeps on a Prefect server: its limits, the API key's Secret block, the
artifacts a run shows in the UI, and `aibatch setup`. Part of the Prefect layer; the task
modules are in tasks/, the flows in flows/."""
