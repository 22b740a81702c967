"""The heavy stages on a Ray cluster (`python -m pipeline distribute`): what is stale, a snapshot of the
workspace for the workers, and the task that runs one stage in its own scratch checkout."""
