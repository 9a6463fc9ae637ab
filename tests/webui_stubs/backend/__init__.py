"""Stand-in for Forge's backend package: only backend.attention, as the script path uses it."""
