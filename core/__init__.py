"""candleflow's shared core: configuration, timeframes, symbols, the candle schema and store."""
