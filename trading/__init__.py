"""The live decision layer: ensemble vote, signal weight and tier, risk and sizing."""
