"""Reading the user's rows (CSV, JSON Lines, Parquet) into a DataFrame."""
