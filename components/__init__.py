"""KFP components (thin wiring around the libraries)."""
