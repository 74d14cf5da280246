"""Planning the workflow without torch: the job set, per-job parameter and code files, dvc.yaml, SLURM resources."""
