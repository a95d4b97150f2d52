"""Training: config, data pool, schedule, loop, the synthetic generator and Dice."""
