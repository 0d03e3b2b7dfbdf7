"""Math environments: GSM8K, MATH-style boxed answers, reasoning-gym generators."""
