"""What every stage shares and none owns: seeds, devices, statistics, atomic files. No Ray, no MLflow."""
