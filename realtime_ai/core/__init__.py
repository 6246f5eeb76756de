"""Pure logic of realtime-ai: no Beam import anywhere below this package."""
