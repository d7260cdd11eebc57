"""TI mmWave radar (out-of-box demo, SDK 3.x)."""
