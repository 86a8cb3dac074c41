"""Storage: SQL and Redis live here and nowhere else."""
