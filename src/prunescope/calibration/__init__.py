"""Calibration data: text sources as documents, and the seeded token windows pruning methods calibrate on."""
